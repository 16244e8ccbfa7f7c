"""Partners of the shared zone and what each may read (declared in infra/partners.yaml).

police: every row of every table. A ward: its own municipality in tables of level `town`,
every row of tables of level `municipality`, nothing of level `police`. The same rule is
enforced twice: here for exports (`visitshare pull`), and by PostgreSQL row-level security
for the SQL tables (`visitshare db apply`, infra/sql/shared_rls.sql).
"""

from __future__ import annotations

import csv
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visitshare import release as rel
from visitshare import shared
from visitshare.lakefs import write_text_atomic
from visitshare.settings import Settings


class PartnerError(ValueError):
    """An unknown partner, or a partners file that cannot be used."""


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: Literal["police", "ward"]
    name: str
    municipality_code: str | None = Field(None, pattern=r"^13[0-9]{3}$")

    @model_validator(mode="after")
    def _ward_has_municipality(self) -> Partner:
        if (self.kind == "ward") != (self.municipality_code is not None):
            raise ValueError("a ward needs municipality_code; police must not have one")
        return self

    @property
    def role(self) -> str:
        """Its PostgreSQL role."""
        return "vs_" + re.sub(r"[^a-z0-9_]", "_", self.id)

    def can_read(self, spec: shared.SharedTable) -> bool:
        return self.kind == "police" or spec.level is not shared.Level.POLICE

    def row_filter(self, spec: shared.SharedTable):
        """The Iceberg row filter of this partner's rows (None: all rows)."""
        from pyiceberg.expressions import EqualTo

        if self.kind == "ward" and spec.level is shared.Level.TOWN:
            return EqualTo("municipality_code", self.municipality_code)
        return None


class Partners(BaseModel):
    partners: list[Partner]

    @cached_property
    def by_id(self) -> dict[str, Partner]:
        return {p.id: p for p in self.partners}

    def get(self, partner_id: str) -> Partner:
        try:
            return self.by_id[partner_id]
        except KeyError:
            known = ", ".join(sorted(self.by_id))
            raise PartnerError(f"no partner {partner_id!r} (declared: {known})") from None


def load_partners(settings: Settings) -> Partners:
    path = settings.partners_file
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        partners = Partners.model_validate(raw)
    except OSError as exc:
        raise PartnerError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise PartnerError(f"{path}: {exc}") from None
    ids = [p.id for p in partners.partners]
    if len(set(ids)) != len(ids):
        raise PartnerError(f"{path}: a partner id is declared twice")
    return partners


def view(settings: Settings, partner: Partner, release, name: str) -> pa.Table:
    """One table of a release as `partner` may see it."""
    spec = shared.table(name)
    if not partner.can_read(spec):
        raise PartnerError(f"partner {partner.id!r} may not read {name!r} ({spec.level} only)")
    return rel.read_table(settings, release, name, partner.row_filter(spec))


def _csv_ready(table: pa.Table) -> pa.Table:
    """Lists as `a;b` text (CSV has no lists)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            joined = pc.binary_join(table.column(i), ";")
            table = table.set_column(i, f.name, joined)
    return table


def pull(
    settings: Settings, partner_id: str, which: str | int, fmt: str, out_dir: Path
) -> tuple[int, dict[str, tuple[Path, int]]]:
    """Export a partner's view of a release; (release id, table → (file, rows))."""
    if fmt not in ("parquet", "csv"):
        raise PartnerError(f"format must be parquet or csv, not {fmt!r}")
    partner = load_partners(settings).get(partner_id)
    release = rel.get_release(settings, which)
    target = out_dir / partner.id / f"release-{release.id}"
    written: dict[str, tuple[Path, int]] = {}
    for spec in shared.TABLES:
        if not partner.can_read(spec):
            continue
        data = view(settings, partner, release, spec.name)
        path = target / f"{spec.name}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        if fmt == "parquet":
            pq.write_table(data, tmp)
        else:
            _write_csv(_csv_ready(data), tmp)
        tmp.replace(path)
        written[spec.name] = (path, data.num_rows)
    write_text_atomic(
        target / "RELEASE.txt",
        f"release {release.id} published {release.published_at:%Y-%m-%d %H:%M} UTC for "
        f"partner {partner.id} ({partner.name})\n"
        + "".join(f"{n}: {rows} rows\n" for n, (_, rows) in written.items()),
    )
    return release.id, written


def _write_csv(table: pa.Table, path: Path) -> None:
    # Python's csv module: UTF-8 with BOM so that Excel (what wards open CSV with) reads 町名.
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(table.column_names)
        for batch in table.to_batches(10_000):
            cols = [c.to_pylist() for c in batch.columns]
            w.writerows(zip(*cols, strict=True))

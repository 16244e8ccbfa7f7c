"""`visitshare pull`: one partner's view of a release, exported as Parquet or CSV files, with
its dashboard (`dashboard.html`, `visitshare.access.dashboard`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from visitshare.access.dashboard import render_dashboard
from visitshare.access.errors import PartnerError
from visitshare.access.partners import load_partners, view
from visitshare.landing.files import write_text_atomic
from visitshare.release import releases as rel
from visitshare.release import shared
from visitshare.settings import Settings


def _csv_ready(table: pa.Table) -> pa.Table:
    """Lists as `a;b` text (CSV has no lists). Any list type (Iceberg reads come back as
    large lists, and binary_join has no kernel for them) is joined as list<string>."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            lists = pc.cast(table.column(i), pa.list_(pa.string()))
            table = table.set_column(i, f.name, pc.binary_join(lists, ";"))
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
    for spec in shared.tables(settings):
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
    write_text_atomic(target / "dashboard.html", render_dashboard(settings, partner, release))
    write_text_atomic(  # last: a folder with RELEASE.txt is a complete pull
        target / "RELEASE.txt",
        f"release {release.id} published {release.published_at:%Y-%m-%d %H:%M} UTC for "
        f"partner {partner.id} ({partner.name})\n"
        + "".join(f"{n}: {rows} rows\n" for n, (_, rows) in written.items())
        + "dashboard: dashboard.html (opens offline in a browser)\n",
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

"""Writing Parquet files into the lake: whole, fsynced, and never half-visible.

Every zone (raw, validated, quarantine, shared) writes through `write_parquet`, so a reader
never sees a partial file and a crash leaves at most a temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_HIGH_CARDINALITY = {
    "kafka_value",
    "kafka_headers",
    "kafka_offset",
    "kafka_timestamp",
    "source_offset",
}


def _low_cardinality(f: pa.Field) -> bool:
    """Columns worth a dictionary: codes, enums, flags, small numbers (by their contract)."""
    if f.name in _HIGH_CARDINALITY:
        return False
    if f.name.startswith(("kafka_", "source_")) or f.name == "parse_status":
        return True
    pii = (f.metadata or {}).get(b"pii")
    if pii in (b"direct_identifier", b"free_text"):
        return False
    return not (pa.types.is_timestamp(f.type) or pa.types.is_floating(f.type))


def encode_parquet(table: pa.Table, metadata: dict[str, str] | None = None) -> pa.Buffer:
    """The table as Parquet bytes (zstd; dictionaries and statistics only where they pay off)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=1,
        row_group_size=1 << 20,
        # Encoding every high-cardinality column (values, ids, names) costs CPU, saves nothing.
        use_dictionary=[c for c in table.column_names if _low_cardinality(table.schema.field(c))],
        write_statistics=[
            c
            for c in table.column_names
            if pa.types.is_timestamp(table.schema.field(c).type) or c.endswith("offset")
        ],
    )
    return sink.getvalue()


def write_parquet(
    table: pa.Table,
    path: Path,
    metadata: dict[str, str] | None = None,
    replace: Callable[[Path], bool] = lambda _: True,
) -> tuple[int, str]:
    """Write the file under a temporary name, fsync it, then link it into place.

    Linking never overwrites by itself: if `path` exists, `replace(path)` decides whether it
    may go (True, the default) or is someone else's file (False: FileExistsError).
    Returns (bytes, sha256).
    """
    data = encode_parquet(table, metadata)
    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            if not replace(path):
                raise
            path.unlink()
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return len(data), digest


def remove(path: Path) -> None:
    """Delete a lake file (and fsync its folder, so the removal survives a crash)."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file (report, marker) so that readers see the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

"""Parquet files of the lake: how they are encoded, and how one is written on local disk,
whole, fsynced and never half-visible.

Every zone writes through `visitshare.lake.Lake`, which encodes here (`encode_parquet`) and,
on local disk, writes with `write_file`: a reader never sees a partial file and a crash leaves
at most a temporary file behind.
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


def _encoding(schema: pa.Schema) -> dict:
    """zstd; dictionaries and statistics only where they pay off."""
    return {
        "compression": "zstd",
        "compression_level": 1,
        # Encoding every high-cardinality column (values, ids, names) costs CPU, saves nothing.
        "use_dictionary": [c for c in schema.names if _low_cardinality(schema.field(c))],
        "write_statistics": [
            c
            for c in schema.names
            if pa.types.is_timestamp(schema.field(c).type) or c.endswith("offset")
        ],
    }


def encode_parquet(table: pa.Table, metadata: dict[str, str] | None = None) -> pa.Buffer:
    """The table as Parquet bytes, one row group (zstd; dictionaries and statistics only where
    they pay off)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1 << 20, **_encoding(table.schema))
    return sink.getvalue()


class ParquetStream:
    """A Parquet file encoded in memory while its rows arrive: one row group per `write`.

    What is held is the compressed file so far, not its rows, and the encoder's working memory
    is that of one row group: a file built this way costs a fraction of the memory of encoding
    all its rows at once. Same encoding as `encode_parquet`. `metadata` goes into the schema
    (what is known when the file opens); `finish` can add more (Parquet key-value metadata).
    """

    def __init__(self, schema: pa.Schema, metadata: dict[str, str] | None = None):
        if metadata:
            schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(self._sink, schema, **_encoding(schema))

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    @property
    def nbytes(self) -> int:
        """Encoded bytes so far."""
        return self._sink.tell()

    def finish(self, metadata: dict[str, str] | None = None) -> pa.Buffer:
        """Close the file (adding `metadata`) and return its bytes."""
        if metadata:
            self._writer.add_key_value_metadata(metadata)
        self._writer.close()
        return self._sink.getvalue()


def write_parquet(
    table: pa.Table,
    path: Path,
    metadata: dict[str, str] | None = None,
    replace: Callable[[Path], bool] = lambda _: True,
) -> tuple[int, str]:
    """Encode the table (`encode_parquet`) and write it (`write_file`). Returns (bytes, sha256)."""
    return write_file(encode_parquet(table, metadata), path, replace)


def write_file(
    data: bytes | pa.Buffer, path: Path, replace: Callable[[Path], bool] = lambda _: True
) -> tuple[int, str]:
    """Write the file under a temporary name, fsync it, then link it into place.

    Linking never overwrites by itself: if `path` exists, `replace(path)` decides whether it
    may go (True, the default) or is someone else's file (False: FileExistsError).
    Returns (bytes, sha256).
    """
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

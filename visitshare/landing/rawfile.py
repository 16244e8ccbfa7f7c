"""Raw Parquet files: Kafka records as they came, plus their fields decoded where possible.

Every file holds one contiguous offset range of one topic-partition. The `kafka_*` columns keep
each record byte for byte (key, value, headers, timestamp, offset), so nothing is ever lost,
even for values that are not JSON. Next to them, the fields of the topic's contract are decoded
into typed columns where the value parses; `parse_status` says how that went:

- ok: decoded into the contract's types (it does not mean the event is valid: validation decides)
- type_mismatch: a JSON object, but `mismatched_fields` did not fit their types (left null)
- invalid_json, invalid_utf8, not_an_object, null_value: nothing decoded
- no_contract: the topic has no contract (e.g. releases.v1)
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from visitshare.contracts import Contract, FieldType, arrow_schema, parse_timestamp

HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
KAFKA_FIELDS = [
    pa.field("kafka_topic", pa.string(), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("kafka_key", pa.binary()),
    pa.field("kafka_value", pa.binary()),
    pa.field("kafka_headers", HEADERS_TYPE),
    pa.field("parse_status", pa.string(), nullable=False),
    pa.field("mismatched_fields", pa.list_(pa.string())),
]
INT32 = (-(2**31), 2**31 - 1)


def raw_schema(contract: Contract | None) -> pa.Schema:
    """Kafka columns, then the contract's fields (all nullable: decoding is best effort)."""
    decoded = [] if contract is None else [f.with_nullable(True) for f in arrow_schema(contract)]
    meta = {"contract": contract.id} if contract else {}
    return pa.schema(KAFKA_FIELDS + decoded, metadata=meta)


KAFKA_SCHEMA = pa.schema(KAFKA_FIELDS[:7])


def kafka_batch(topic: str, partition: int, records: list) -> pa.RecordBatch:
    """The `kafka_*` columns of kafka-python ConsumerRecords, byte for byte."""
    n = len(records)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.timestamp for r in records], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([r.headers for r in records], HEADERS_TYPE),
        ],
        schema=KAFKA_SCHEMA,
    )


# -- decoding --------------------------------------------------------------------------------
def _lenient(kind: FieldType, v):
    """The value in the column's type, or raise ValueError (a type mismatch)."""
    t = type(v)
    if kind in (FieldType.STRING, FieldType.UUID) and t is str:
        return v
    if kind is FieldType.INTEGER and t is int and INT32[0] <= v <= INT32[1]:
        return v
    if kind is FieldType.NUMBER and t in (int, float) and math.isfinite(v):
        return float(v)
    if kind is FieldType.BOOLEAN and t is bool:
        return v
    if kind is FieldType.TIMESTAMP and t is str and (ts := parse_timestamp(v)) is not None:
        return ts
    if kind is FieldType.ARRAY and t is list and all(type(x) is str for x in v):
        return v
    raise ValueError


def decode_one(value: bytes | None, contract: Contract) -> tuple[str, list[str] | None, dict]:
    """(parse_status, mismatched fields, decoded fields) of one value, in plain Python."""
    if value is None:
        return "null_value", None, {}
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None, {}
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "invalid_json", None, {}
    if type(obj) is not dict:
        return "not_an_object", None, {}
    row, mismatched = {}, []
    for f in contract.fields:
        v = obj.get(f.name)
        if v is None:
            continue
        try:
            row[f.name] = _lenient(f.type, v)
        except ValueError:
            mismatched.append(f.name)
    return ("type_mismatch", mismatched, row) if mismatched else ("ok", None, row)


class Decoder:
    """Decodes a batch of values into the contract's typed columns.

    Fast path: all values are parsed together as JSON Lines by Arrow's JSON reader (C++, off
    the GIL). A batch it refuses, or that yields a different number of rows, is split in
    halves until the culprits are isolated; those take the slow path (`decode_one`), which also
    finds the reason.
    """

    def __init__(self, contract: Contract, *, fast: bool = True):
        self.contract = contract
        self.fast = fast
        self.schema = pa.schema([f.with_nullable(True) for f in arrow_schema(contract)])
        self._options = pj.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="ignore"
        )
        # One thread: the lander's other work needs the other core.
        self._read_options = pj.ReadOptions(use_threads=False, block_size=16 << 20)

    def _read(self, values: list[bytes]) -> pa.Table | None:
        return self._read_buffer(pa.py_buffer(b"\n".join(values)))

    def _read_buffer(self, data: pa.Buffer) -> pa.Table | None:
        try:
            return pj.read_json(
                pa.BufferReader(data),
                read_options=self._read_options,
                parse_options=self._options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def _fast_rows(
        self, values, indices: list[int], tables: list, fast_idx: list, slow: list
    ) -> None:
        table = self._read([values[i] for i in indices])
        if table is not None and table.num_rows == len(indices):
            tables.append(table)
            fast_idx.extend(indices)
        elif len(indices) == 1:
            slow.append(indices[0])
        else:
            half = len(indices) // 2
            self._fast_rows(values, indices[:half], tables, fast_idx, slow)
            self._fast_rows(values, indices[half:], tables, fast_idx, slow)

    def decode(self, values: pa.Array | list) -> tuple[pa.Table, list[str], list]:
        """(decoded table in input order, parse_status per value, mismatched fields per value).

        `values` is a binary Arrow array (a raw file's kafka_value column) or a list of bytes.
        """
        n = len(values)
        if self.fast and isinstance(values, pa.Array) and values.null_count == 0 and n:
            # The usual case, without a Python object per value: one JSON Lines buffer.
            table = self._read_buffer(_json_lines(values))
            if table is not None and table.num_rows == n:
                return table, ["ok"] * n, [None] * n
        values = values.to_pylist() if isinstance(values, pa.Array) else values
        status = ["ok"] * n
        mismatched: list[list[str] | None] = [None] * n
        if not self.fast:
            candidates, slow = [], list(range(n))
        else:
            # Arrow's reader first; what it refuses (not JSON, a value with a line break, a type
            # mismatch) is isolated by halving and decoded one by one. Tombstones go straight
            # to the slow path: they cannot be joined into JSON Lines.
            candidates = [i for i, v in enumerate(values) if v is not None]
            slow = [i for i, v in enumerate(values) if v is None]
        tables: list[pa.Table] = []
        order: list[int] = []
        if candidates:
            self._fast_rows(values, candidates, tables, order, slow)
        if slow:
            rows = []
            for i in sorted(slow):
                status[i], mismatched[i], row = decode_one(values[i], self.contract)
                rows.append(row)
                order.append(i)
            tables.append(pa.Table.from_pylist(rows, schema=self.schema))
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        if order != list(range(n)):
            position = [0] * n
            for at, i in enumerate(order):
                position[i] = at
            table = table.take(pa.array(position, pa.int64()))
        return table, status, mismatched


def _json_lines(values: pa.Array) -> pa.Buffer:
    """The values joined by newlines, as one Arrow buffer (built in C++, no Python objects)."""
    joined = pc.binary_join_element_wise(values, pa.scalar(b"", pa.binary()), b"\n")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)
    start, end = offsets[joined.offset], offsets[joined.offset + len(joined)]
    return joined.buffers()[2].slice(int(start), int(end - start))


# -- files -----------------------------------------------------------------------------------
def complete_table(kafka: pa.Table, decoder: Decoder | None) -> pa.Table:
    """Kafka columns + parse status + the contract's decoded fields: a raw file's content."""
    n = kafka.num_rows
    if decoder is None:
        status, mismatched, decoded = ["no_contract"] * n, [None] * n, None
    else:
        decoded, status, mismatched = decoder.decode(kafka.column("kafka_value").combine_chunks())
    table = kafka.append_column(KAFKA_FIELDS[7], pa.array(status, pa.string()))
    table = table.append_column(KAFKA_FIELDS[8], pa.array(mismatched, pa.list_(pa.string())))
    if decoded is not None:
        for name in decoded.column_names:
            table = table.append_column(decoded.field(name), decoded.column(name))
    return table

"""Raw Parquet files: Kafka records as they came, plus their fields decoded where possible.

Every file holds one contiguous offset range of one topic-partition. The `kafka_*` columns keep
each record byte for byte (key, value, headers, timestamp, offset), so nothing is ever lost,
even for values that are not JSON. Next to them, the fields of the topic's contract are decoded
into typed columns where the value parses; `parse_status` says how that went:

- ok: decoded into the contract's types (it does not mean the event is valid: validation decides)
- type_mismatch: a JSON object, but `mismatched_fields` did not fit their types (left null)
- invalid_json, invalid_utf8, not_an_object, null_value, duplicate_key: nothing decoded (the
  codes of `visitshare.contracts.formats.decode_value`, which decides for every path)
- no_contract: the topic has no contract (e.g. releases.v1)
"""

from __future__ import annotations

import functools
import importlib.abc
import math
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from visitshare.contracts import Contract, FieldType, arrow_schema, parse_timestamp
from visitshare.contracts.formats import TIMESTAMP_PATTERN, decode_value

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


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


_primed = threading.Lock()


def arrow_without_pandas() -> None:
    """Keep pyarrow from importing pandas in this process (30 to 50 MB of resident memory).

    pyarrow imports pandas on the first `pa.array()` call, only to recognize pandas objects;
    landing never hands it any. If pandas cannot be imported at that first call, pyarrow
    remembers "no pandas" and converts every input as a plain sequence. It still imports pandas
    when asked for pandas itself (`to_pandas`, `from_pandas`), so nothing in the process loses
    pandas support: it only stops paying for it up front. No-op once pandas is imported.
    Two other paths import pandas from pyarrow's C++ side, so the landing code avoids them:
    `to_numpy()` (see `_numbers`, `_bools`) and inferring the type of a Python value (see
    `_scalar`).
    """
    with _primed:
        if "pandas" in sys.modules:
            return
        blocker = _NoPandas()
        sys.meta_path.insert(0, blocker)
        try:
            pa.array([0], pa.int8())  # pyarrow's first look for pandas happens here
        finally:
            sys.meta_path.remove(blocker)


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
    """(parse_status, mismatched fields, decoded fields) of one value, in plain Python.

    The reference for every value: `decode_value` (the contracts' one definition of "exactly
    one JSON object") decides whether it decodes at all; then each contract field is taken
    if it fits its type. Unknown fields are not decoded (validation reports them)."""
    obj, problem, _ = decode_value(value)
    if problem is not None:
        return problem.value, None, {}
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


# Each fast-path line is {"#row": <position>, "#value": <the value>}.
ROW_KEY, VALUE_KEY = "#row", "#value"


@functools.cache
def _scalar(value: bytes | bool) -> pa.Scalar:
    """A typed scalar for compute calls: given a bare Python value, pyarrow infers its type,
    which imports pandas (see `arrow_without_pandas`). Made on first use, not at import."""
    return pa.scalar(value, pa.bool_() if isinstance(value, bool) else pa.binary())


class Decoder:
    """Decodes a batch of values into the contract's typed columns, each row from its own value.

    Fast path: values that look like one compact JSON object (valid UTF-8, `{` … `}`, no line
    break) are parsed together as JSON Lines by Arrow's reader (C++, off the GIL), each
    wrapped with its position: `{"#row": i, "#value": <value>}`. The batch counts only if Arrow returns one
    row per value with the positions 0, 1, 2 … in order: a value holding two documents, or
    none, cannot shift another value's fields. A batch that fails (or a value with a
    non-finite number or a null list item, which Arrow accepts and the reference does not) is
    split in halves until the culprits are isolated; those, and every value that does not look
    like one object, take the reference path (`decode_one`), which also finds the reason.
    Timestamps are read as text and parsed as strictly as the reference does.
    """

    def __init__(self, contract: Contract, *, fast: bool = True):
        self.contract = contract
        self.fast = fast
        self.schema = pa.schema([f.with_nullable(True) for f in arrow_schema(contract)])
        self._timestamps = [f.name for f in contract.fields if f.type is FieldType.TIMESTAMP]
        self._numbers = [f.name for f in contract.fields if f.type is FieldType.NUMBER]
        self._lists = [f.name for f in contract.fields if f.type is FieldType.ARRAY]
        fields = [
            pa.field(f.name, pa.string()) if f.name in self._timestamps else f for f in self.schema
        ]
        read_schema = pa.schema([(ROW_KEY, pa.int64()), (VALUE_KEY, pa.struct(fields))])
        self._options = pj.ParseOptions(
            explicit_schema=read_schema, unexpected_field_behavior="error"
        )
        # One thread: the lander's other work needs the other core.
        self._read_options = pj.ReadOptions(use_threads=False, block_size=16 << 20)

    # -- the fast path ------------------------------------------------------------------------
    def _parse(self, values: pa.Array, positions: np.ndarray) -> pa.Table | None:
        """Arrow's reader on these values (binary, each `{...}`), or None unless provably one
        row per value, in order, with what the reference would accept."""
        prefixes = pa.array(
            [f'{{"{ROW_KEY}":{i},"{VALUE_KEY}":'.encode() for i in positions], pa.binary()
        )
        # One line per value, newline included: the result's data buffer is the JSON Lines text.
        lines = pc.binary_join_element_wise(prefixes, values, _scalar(b"}\n"), _scalar(b""))
        try:
            table = pj.read_json(
                pa.BufferReader(_data(lines)),
                read_options=self._read_options,
                parse_options=self._options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        marker = table.column(ROW_KEY)
        if table.num_rows != len(positions) or marker.null_count:
            return None
        if not np.array_equal(_numbers(marker.combine_chunks(), np.int64), positions):
            return None
        inner = table.column(VALUE_KEY).combine_chunks()
        table = pa.Table.from_arrays(inner.flatten(), names=[f.name for f in inner.type])
        for name in self._numbers:  # Arrow reads NaN and Infinity; RFC 8259 has neither
            col = table.column(name)
            if not pc.all(pc.or_kleene(pc.is_null(col), pc.is_finite(col))).as_py():
                return None
        for name in self._lists:  # a null item is not a string
            if pc.list_flatten(table.column(name)).null_count:
                return None
        return self._typed(table)

    def _typed(self, table: pa.Table) -> pa.Table | None:
        """Timestamp columns parsed from their text exactly as `parse_timestamp` does."""
        for name in self._timestamps:
            text = table.column(name)
            strict = pc.match_substring_regex(text, pattern=TIMESTAMP_PATTERN)
            if not pc.all(pc.or_kleene(pc.is_null(text), strict)).as_py():
                return None
            try:
                parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
            except pa.ArrowInvalid:  # an impossible date (2026-02-30): the reference decides
                return None
            i = table.schema.get_field_index(name)
            table = table.set_column(
                i, self.schema.field(name), parsed.cast(self.schema.field(name).type)
            )
        return table.cast(self.schema)

    def _fast_rows(
        self, values: pa.Array, positions: np.ndarray, tables: list, fast_idx: list, slow: list
    ) -> None:
        table = self._parse(values, positions)
        if table is not None:
            tables.append(table)
            fast_idx.extend(positions.tolist())
        elif len(positions) == 1:
            slow.append(int(positions[0]))
        else:
            half = len(positions) // 2
            self._fast_rows(values.slice(0, half), positions[:half], tables, fast_idx, slow)
            self._fast_rows(values.slice(half), positions[half:], tables, fast_idx, slow)

    def _candidates(self, values: pa.Array) -> np.ndarray:
        """Positions of values that may take the fast path (the rest go straight to the
        reference): not null, valid UTF-8, `{` first and `}` last, no line break."""
        n = len(values)
        if not self.fast or not n:
            return np.zeros(n, bool)
        ok = pc.and_(pc.starts_with(values, pattern=b"{"), pc.ends_with(values, pattern=b"}"))
        mask = _bools(pc.fill_null(ok, _scalar(False)))
        mask[_values_with_line_breaks(values)] = False
        try:
            values.cast(pa.string())  # validates UTF-8 for the whole batch at once
        except pa.ArrowInvalid:
            for i in np.flatnonzero(mask):
                try:
                    values[int(i)].as_py().decode("utf-8")
                except UnicodeDecodeError:
                    mask[i] = False
        return mask

    def decode(self, values: pa.Array | list) -> tuple[pa.Table, list[str], list]:
        """(decoded table in input order, parse_status per value, mismatched fields per value).

        `values` is a binary Arrow array (a raw file's kafka_value column) or a list of bytes.
        """
        if not isinstance(values, pa.Array):
            values = pa.array(values, pa.binary())
        n = len(values)
        status = ["ok"] * n
        mismatched: list[list[str] | None] = [None] * n
        fast = self._candidates(values)
        tables: list[pa.Table] = []
        order: list[int] = []
        slow = np.flatnonzero(~fast).tolist()
        positions = np.flatnonzero(fast)
        if len(positions):
            self._fast_rows(values.filter(pa.array(fast)), positions, tables, order, slow)
        if slow:
            rows = []
            for i in sorted(slow):
                status[i], mismatched[i], row = decode_one(values[i].as_py(), self.contract)
                rows.append(row)
                order.append(i)
            tables.append(pa.Table.from_pylist(rows, schema=self.schema))
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        if order != list(range(n)):
            position = np.empty(n, np.int64)
            position[np.asarray(order, np.int64)] = np.arange(n)
            table = table.take(pa.array(position))
        return table, status, mismatched


# Arrow → numpy straight from the buffers: `to_numpy()` would have pyarrow import pandas.
def _numbers(array: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """A fixed-width array without nulls as a read-only numpy view of its data buffer."""
    return np.frombuffer(array.buffers()[1], dtype)[array.offset : array.offset + len(array)]


def _bools(array: pa.Array) -> np.ndarray:
    """A boolean array without nulls as numpy bools (Arrow packs them in bits, LSB first)."""
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool)


def _values_with_line_breaks(values: pa.Array) -> np.ndarray:
    """Positions of the values that contain a line feed or carriage return (numpy over the
    data buffer: Arrow's substring kernels are 15 times slower here)."""
    if values.buffers()[2] is None:
        return np.zeros(0, np.int64)
    offsets = np.frombuffer(values.buffers()[1], np.int32)[
        values.offset : values.offset + len(values) + 1
    ]
    data = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    hits = np.flatnonzero((data == 10) | (data == 13)) + offsets[0]
    return np.unique(np.searchsorted(offsets, hits, side="right") - 1)


def _data(values: pa.Array) -> pa.Buffer:
    """The bytes of a binary array's values, back to back (a slice of its data buffer)."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    start, end = offsets[values.offset], offsets[values.offset + len(values)]
    return values.buffers()[2].slice(int(start), int(end - start))


# -- files -----------------------------------------------------------------------------------
# Values decoded at once: the decoder's working memory is a few times its input, so a file is
# decoded in slices of this many rows rather than whole.
DECODE_ROWS = 2048


def complete_table(kafka: pa.Table, decoder: Decoder | None) -> pa.Table:
    """Kafka columns + parse status + the contract's decoded fields: a raw file's content."""
    n = kafka.num_rows
    decoded: pa.Table | None = None
    if decoder is None:
        status, mismatched = ["no_contract"] * n, [None] * n
    else:
        values = kafka.column("kafka_value")
        tables, status, mismatched = [], [], []
        for start in range(0, n, DECODE_ROWS):
            t, s, m = decoder.decode(values.slice(start, DECODE_ROWS).combine_chunks())
            tables.append(t)
            status += s
            mismatched += m
        decoded = pa.concat_tables(tables) if tables else decoder.schema.empty_table()
    table = kafka.append_column(KAFKA_FIELDS[7], pa.array(status, pa.string()))
    table = table.append_column(KAFKA_FIELDS[8], pa.array(mismatched, pa.list_(pa.string())))
    if decoded is not None:
        for name in decoded.column_names:
            table = table.append_column(decoded.field(name), decoded.column(name))
    return table

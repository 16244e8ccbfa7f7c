"""Text formats the contracts use, shared by every validator and schema derived from them.

`decode_value` is the one definition of "a message value that is an event": the producer's
check, landing's decoder and validation all call it, so they agree on every input.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# RFC 3339 date-time: ISO 8601 with a mandatory UTC offset ("2026-11-20T10:15:00+09:00").
# ASCII digits only (Python's \d also matches full-width and other scripts' digits).
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"

UUID_RE = re.compile(UUID_PATTERN)
# Always used with fullmatch: `$` alone would accept a trailing newline.
TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


def parse_timestamp(value: str) -> datetime | None:
    """An aware datetime from RFC 3339 text, or None if malformed or not a real date."""
    if TIMESTAMP_RE.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # e.g. 2026-02-30
        return None


class DecodeProblem(StrEnum):
    """Why a message value is not one event. Stable codes (DLQ headers, raw files, reports)."""

    NULL_VALUE = "null_value"  # a Kafka tombstone: no value at all
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"  # not RFC 8259 JSON, or more than one document, a BOM, NaN …
    NOT_AN_OBJECT = "not_an_object"
    DUPLICATE_KEY = "duplicate_key"


def decode_value(raw: bytes | None) -> tuple[Any, DecodeProblem | None, str]:
    """(the object, None, "") for a value that is exactly one JSON object, else
    (None, the problem, a detail that names no value).

    Strict: UTF-8 only (no byte order mark, no surrogates), one RFC 8259 document (no NaN or
    Infinity, nothing after it, at most MAX_DEPTH levels deep), an object, and no key twice in
    any object.
    """
    if raw is None:
        return None, DecodeProblem.NULL_VALUE, "the value is null (a tombstone)"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, DecodeProblem.INVALID_UTF8, f"value is not UTF-8 (byte {exc.start})"
    try:
        obj = orjson.loads(raw)  # rejects a BOM, NaN/Infinity, lone surrogates, trailing data
    except orjson.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return None, DecodeProblem.INVALID_JSON, f"value is not one JSON document ({where})"
    if type(obj) is not dict:
        return None, DecodeProblem.NOT_AN_OBJECT, "value is not a JSON object"
    keys, depth = _walk(obj)
    if depth > MAX_DEPTH:
        return None, DecodeProblem.INVALID_JSON, f"value is nested deeper than {MAX_DEPTH} levels"
    if _has_duplicate_keys(raw, keys):
        return None, DecodeProblem.DUPLICATE_KEY, "an object in the value repeats a key"
    return obj, None, ""


MAX_DEPTH = 32  # events are flat; deeper nesting is an attack on parsers, not data


def _walk(value: Any) -> tuple[int, int]:
    """(keys in all objects, nesting depth), without recursion (a deep value cannot blow the
    stack here)."""
    keys, depth, stack = 0, 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if type(v) is dict:
            keys += len(v)
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v.values())
        elif type(v) is list:
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
    return keys, depth


_SPACE_BEFORE_COLON = re.compile(rb'"[ \t\r\n]+:')


def _has_duplicate_keys(raw: bytes, keys: int) -> bool:
    """Exact, and cheap for compact JSON. When no key is followed by whitespace before its
    colon, every key occurrence in the text is a `":`; the text's `":` count is then the
    number of keys written plus any inside strings, which equals the parsed objects' key
    count only if no key was dropped as a repeat. Otherwise parse again counting pairs."""
    if _SPACE_BEFORE_COLON.search(raw) is None and raw.count(b'":') == keys:
        return False
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict:
        nonlocal repeated
        keys = [k for k, _ in items]
        repeated = repeated or len(set(keys)) != len(keys)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return repeated

"""The sharing server's pure parts: signed URLs, durations, pages, Delta schemas."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from visitshare.access.server import _page, _timestamp
from visitshare.access.sharing import SharingError, delta_schema
from visitshare.access.signing import Grant
from visitshare.access.tokens import TokenError, parse_duration

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_signature_covers_every_part_of_the_grant():
    grant = Grant(
        "shared/visits/data/municipality_code=13104/a.parquet", "shinjuku", "ab" * 6, 2_000_000_000
    )
    sig = grant.signature(KEY)
    assert grant.valid(sig, KEY, NOW)
    for field, other in (
        ("file", "shared/visits/data/municipality_code=13102/a.parquet"),
        ("partner", "chuo"),
        ("token_id", "cd" * 6),
        ("expires", grant.expires + 1),
    ):
        assert not dataclasses.replace(grant, **{field: other}).valid(sig, KEY, NOW), field
    assert not grant.valid(sig, b"x" * 32, NOW)  # another server's key
    assert not grant.valid(sig, KEY, datetime.fromtimestamp(grant.expires, UTC))  # expired
    assert grant.valid(sig, KEY, datetime.fromtimestamp(grant.expires - 1, UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), (" 2w ", timedelta(weeks=2))],
)
def test_durations(text, expected):
    assert parse_duration(text, 365) == expected


@pytest.mark.parametrize("text", ["0d", "-1d", "1y", "d", "", "1.5d", "366d", "53w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(TokenError):
        parse_duration(text, 365)


def test_pages_cover_every_item_once():
    items = [{"name": str(i)} for i in range(7)]
    for size in (1, 2, 3, 7, 10):
        seen, token = [], None
        while True:
            page = _page(items, size, token)
            seen += page["items"]
            token = page.get("nextPageToken")
            if not token:
                break
        assert seen == items, size
    assert _page(items, None, None)["items"] == items
    for bad in ("garbage", "eyJ4IjogMX0="):  # not base64 JSON / no offset
        with pytest.raises(SharingError) as err:
            _page(items, 2, bad)
        assert err.value.status == 400
    with pytest.raises(SharingError):
        _page(items, -1, None)


def test_timestamps_need_iso_8601():
    assert _timestamp("2030-01-01T00:00:00Z", "t") == NOW
    assert _timestamp("2030-01-01T09:00:00+09:00", "t") == NOW
    assert _timestamp(None, "t") is None
    with pytest.raises(SharingError):
        _timestamp("yesterday", "t")


def test_delta_schema_of_arrow_types():
    schema = pa.schema(
        [
            ("s", pa.large_string()),
            ("n", pa.int64()),
            ("i", pa.int32()),
            ("x", pa.float64()),
            ("b", pa.bool_()),
            ("d", pa.date32()),
            ("t", pa.timestamp("us", tz="UTC")),
            ("l", pa.large_list(pa.string())),
            ("m", pa.decimal128(10, 2)),
            ("_internal", pa.string()),
        ]
    )
    fields = delta_schema(schema)["fields"]
    types = {f["name"]: f["type"] for f in fields}
    assert types == {
        "s": "string",
        "n": "long",
        "i": "integer",
        "x": "double",
        "b": "boolean",
        "d": "date",
        "t": "timestamp",
        "l": {"type": "array", "elementType": "string", "containsNull": True},
        "m": "decimal(10,2)",
    }
    json.dumps(delta_schema(schema))  # serializable as the schemaString

"""Schemas derived from a contract: Arrow (Parquet), SQL columns and JSON Schema.

All three are computed from the same `FieldSpec`s, so a change in `schemas/` changes them together.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from visitshare.contracts import geography
from visitshare.contracts.formats import TIMESTAMP_PATTERN
from visitshare.contracts.model import Contract, Domain, FieldSpec, FieldType

TOKYO_TZ = "Asia/Tokyo"

_ARROW = {
    FieldType.STRING: pa.string(),
    FieldType.UUID: pa.string(),
    FieldType.INTEGER: pa.int32(),
    FieldType.NUMBER: pa.float64(),
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.TIMESTAMP: pa.timestamp("us", tz=TOKYO_TZ),
    FieldType.ARRAY: pa.list_(pa.string()),
}


def arrow_field(f: FieldSpec) -> pa.Field:
    # The PII class travels with the data: every Parquet file says what each column is.
    meta = {"pii": f.pii.value, "description": f.description}
    return pa.field(f.name, _ARROW[f.type], nullable=not f.required, metadata=meta)


def arrow_schema(contract: Contract) -> pa.Schema:
    return pa.schema(
        [arrow_field(f) for f in contract.fields],
        metadata={"contract": contract.id},
    )


def sql_type(f: FieldSpec) -> sa.types.TypeEngine:
    match f.type:
        case FieldType.STRING:
            return sa.String(f.max_length) if f.max_length else sa.Text()
        case FieldType.UUID:
            return sa.String(36)
        case FieldType.INTEGER:
            return sa.Integer()
        case FieldType.NUMBER:
            return sa.Float()
        case FieldType.BOOLEAN:
            return sa.Boolean()
        case FieldType.TIMESTAMP:
            return sa.DateTime(timezone=True)
        case FieldType.ARRAY:
            return sa.JSON()
    raise AssertionError(f.type)


def sql_columns(contract: Contract) -> list[sa.Column]:
    return [
        sa.Column(
            f.name, sql_type(f), nullable=not f.required, comment=f"[{f.pii}] {f.description}"
        )
        for f in contract.fields
    ]


def _json_field(f: FieldSpec) -> dict[str, Any]:
    s: dict[str, Any]
    match f.type:
        case FieldType.STRING:
            s = {"type": "string"}
        case FieldType.UUID:
            s = {"type": "string", "format": "uuid"}
        case FieldType.INTEGER:
            s = {"type": "integer"}
        case FieldType.NUMBER:
            s = {"type": "number"}
        case FieldType.BOOLEAN:
            s = {"type": "boolean"}
        case FieldType.TIMESTAMP:
            s = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}
        case FieldType.ARRAY:
            s = {"type": "array", "items": {"enum": f.item_values}, "uniqueItems": True}
    if f.enum:
        s["enum"] = f.enum
    if f.pattern:
        s["pattern"] = f.pattern
    if f.max_length:
        s["maxLength"] = f.max_length
    if f.minimum is not None:
        s["minimum"] = f.minimum
    if f.maximum is not None:
        s["maximum"] = f.maximum
    if f.max_items:
        s["maxItems"] = f.max_items
    if f.domain is Domain.TOKYO_MUNICIPALITY:
        s["enum"] = sorted(geography.municipalities())
    if not f.required:
        s = {"anyOf": [s, {"type": "null"}]}
    s["description"] = f.description
    s["x-pii"] = f.pii.value
    return s


def json_schema(contract: Contract) -> dict[str, Any]:
    """JSON Schema (2020-12) for one event; town membership is expressed per municipality."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:visit-share:contract:{contract.id}",
        "title": contract.id,
        "description": contract.description.strip(),
        "type": "object",
        "properties": {f.name: _json_field(f) for f in contract.fields},
        "required": [f.name for f in contract.fields if f.required],
        "additionalProperties": False,
    }
    town_fields = [f.name for f in contract.fields if f.domain is Domain.TOKYO_TOWN]
    if town_fields:
        schema["allOf"] = [
            {
                "if": {"properties": {"municipality_code": {"const": code}}},
                "then": {"properties": {t: {"enum": list(m.towns)} for t in town_fields}},
            }
            for code, m in geography.municipalities().items()
        ]
    return schema

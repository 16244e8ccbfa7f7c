"""Contracts as Open Data Contract Standard (ODCS) v3.2.0 documents: the mapping onto the internal
model, both ways.

A contract file (`schemas/<name>.v<N>.yaml`) is an ODCS document; the code works on the internal
model (`model.Contract`, `model.FieldSpec`), which this module fills from the document and
writes back out:

- `model_input(doc)`: the document, checked against the standard's JSON Schema (from the
  `open-data-contract-standard` package) and against what this pipeline reads, as the dict
  `Contract.model_validate` takes (the layout of the old format);
- `describe(error, data)`: a model error, located in the document's terms;
- `to_odcs(contract)`: a contract as an ODCS document (`visitshare contracts convert`, which
  `loader.convert_file` runs).

Where each thing lives (docs/architecture.md, "Contracts drive the code", has the same table
with examples):

| internal (`Contract`)   | ODCS document                                                        |
| ----------------------- | -------------------------------------------------------------------- |
| name                    | `name` (= `id` = `schema[0].name`)                                   |
| version (N)             | `schema_version`'s `logicalTypeOptions` {minimum: N, maximum: N}     |
|                         | (the `vN` of the file name); without them, the major of `version`    |
| semver                  | `version` "M.m.p"                                                    |
| compatibility           | top-level `customProperties`: `compatibility` (`backward`)           |
| topic                   | `schema[0].physicalName` (`physicalType: topic`)                     |
| description             | `schema[0].description`                                              |
| event_time, key         | top-level `customProperties`: `eventTime`, `key`                     |
| disclosure (the block)  | top-level `customProperties`: `disclosure` (same keys as before)     |
| fields                  | `schema[0].properties`                                               |

| internal (`FieldSpec`)  | ODCS property                                                        |
| ----------------------- | -------------------------------------------------------------------- |
| name, required, description | `name`, `required` (absent = false), `description`               |
| type                    | `logicalType` (uuid: string + `logicalTypeOptions.format: uuid`);    |
|                         | `physicalType` is the JSON type on the topic (checked when given)    |
| pii                     | `classification`                                                     |
| enum                    | `enum: [{value: ...}]`                                               |
| items (array values)    | `items: {logicalType: string, enum: [{value: ...}]}`                 |
| pattern, max_length     | `logicalTypeOptions`: `pattern`, `maxLength`                         |
| minimum, maximum        | `logicalTypeOptions`: `minimum`, `maximum` (integer, number)         |
| earliest                | `logicalTypeOptions.minimum` (timestamp; also `timezone: true`)      |
| max_items               | `logicalTypeOptions.maxItems`                                        |
| domain, not_future, sensitive_values, narrows, disclosure | property `customProperties`: |
|                         | `domain`, `notFuture`, `sensitiveValues`, `narrows`, `disclosure`    |

Anything else the standard allows is refused when it would state a rule this pipeline does not
enforce (`quality`, `unique`, `servers`, other `logicalTypeOptions` …) and accepted when it
only documents (`tags`, `businessName`, `authoritativeDefinitions`, an enum value's `label` …).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import yaml

from visitshare.contracts.model import (
    Contract,
    Disclosure,
    FieldSpec,
    FieldType,
    describe_error,
)

API_VERSION = "v3.2.0"  # the version of the pinned open-data-contract-standard package's schema


class OdcsError(ValueError):
    """An ODCS document this pipeline cannot read; the message locates the problem."""


def is_odcs(raw: dict[str, Any]) -> bool:
    """An ODCS document declares its standard; the old format has neither key."""
    return "apiVersion" in raw or "kind" in raw


# -- the mapping ----------------------------------------------------------------------------------
# Internal type → (logicalType, logicalTypeOptions.format, physicalType: the JSON type on the topic).
TYPES: dict[FieldType, tuple[str, str | None, str]] = {
    FieldType.STRING: ("string", None, "string"),
    FieldType.UUID: ("string", "uuid", "string"),
    FieldType.INTEGER: ("integer", None, "integer"),
    FieldType.NUMBER: ("number", None, "number"),
    FieldType.BOOLEAN: ("boolean", None, "boolean"),
    FieldType.TIMESTAMP: ("timestamp", None, "string"),  # RFC 3339 text with its UTC offset
    FieldType.ARRAY: ("array", None, "array"),
}

# The logicalTypeOptions this pipeline checks, per internal type: option → FieldSpec attribute
# (None: an option that only restates the type, with the one value `_FIXED_OPTIONS` gives).
OPTIONS: dict[FieldType, dict[str, str | None]] = {
    FieldType.STRING: {"maxLength": "max_length", "pattern": "pattern"},
    FieldType.UUID: {"format": None},
    FieldType.INTEGER: {"minimum": "minimum", "maximum": "maximum"},
    FieldType.NUMBER: {"minimum": "minimum", "maximum": "maximum"},
    FieldType.BOOLEAN: {},
    FieldType.TIMESTAMP: {"minimum": "earliest", "timezone": None},
    FieldType.ARRAY: {"maxItems": "max_items"},
}
_FIXED_OPTIONS: dict[FieldType, dict[str, Any]] = {
    FieldType.UUID: {"format": "uuid"},
    FieldType.TIMESTAMP: {"timezone": True},  # every timestamp carries its UTC offset
}

# customProperties: ODCS name (camelCase, as the standard asks) → internal attribute.
CONTRACT_CUSTOM = {
    "eventTime": "event_time",
    "key": "key",
    "disclosure": "disclosure",
    "compatibility": "compatibility",
}
FIELD_CUSTOM = {
    "domain": "domain",
    "notFuture": "not_future",
    "sensitiveValues": "sensitive_values",
    "narrows": "narrows",
    "disclosure": "disclosure",
}

# Where each internal attribute lives in the document (for error messages).
CONTRACT_PLACES = {
    "name": "name",
    "version": "version",
    "semver": "version",
    "topic": "schema[0].physicalName",
    "description": "schema[0].description",
    "fields": "schema[0].properties",
    **{v: f"customProperties.{k}" for k, v in CONTRACT_CUSTOM.items()},
}
FIELD_PLACES = {
    "name": "name",
    "type": "logicalType",
    "required": "required",
    "pii": "classification",
    "description": "description",
    "enum": "enum",
    "items": "items",
    **{a: f"logicalTypeOptions.{o}" for opts in OPTIONS.values() for o, a in opts.items() if a},
    **{v: f"customProperties.{k}" for k, v in FIELD_CUSTOM.items()},
}

# Keys the standard allows that this pipeline reads, or accepts as documentation only. Every
# other standard key states something (a quality rule, uniqueness, a server, an SLA …) that
# nothing here would enforce, so the loader refuses it rather than ignore it.
_DOCS = {"id", "tags", "businessName", "authoritativeDefinitions", "synonyms"}
TOP_KEYS = {"apiVersion", "kind", "id", "name", "version", "status", "schema", "customProperties",
            "description", "tags", "domain", "tenant", "team", "support",
            "authoritativeDefinitions", "contractCreatedTs"}  # fmt: skip
OBJECT_KEYS = {"name", "physicalName", "physicalType", "logicalType", "description", "properties",
               "dataGranularityDescription", *_DOCS}  # fmt: skip
PROPERTY_KEYS = {"name", "logicalType", "logicalTypeOptions", "physicalType", "required",
                 "description", "classification", "enum", "items", "customProperties",
                 "examples", "criticalDataElement", *_DOCS}  # fmt: skip
ITEMS_KEYS = {"logicalType", "physicalType", "enum", "description"}
ENUM_VALUE_KEYS = {"value", "label", "description", "id"}
CUSTOM_KEYS = {"property", "value", "description", "id", "vendor"}

_SEMVER = re.compile(r"^([1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


# -- reading --------------------------------------------------------------------------------------
def schema_property(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The property `name` of a document's object (for code and tests that edit documents)."""
    for p in doc["schema"][0]["properties"]:
        if p["name"] == name:
            return p
    raise KeyError(f"no property {name!r}")


def custom_property(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The `customProperties` entry `name` of a document or property ({property, value}), or
    None."""
    return next((e for e in node.get("customProperties") or [] if e["property"] == name), None)


@cache
def _schema_validator() -> Any:
    import jsonschema

    try:
        text = resources.files("open_data_contract_standard").joinpath("schema.json").read_text()
    except ModuleNotFoundError:
        raise OdcsError(
            "the open-data-contract-standard package is not installed (make install)"
        ) from None
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """What the ODCS JSON Schema finds wrong with `doc` (most relevant first, at most 5).
    Remembered per document: validating takes tens of milliseconds, and stages load the same
    contracts again and again."""
    key = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _CHECKED:
        if len(_CHECKED) >= 64:
            _CHECKED.clear()
        _CHECKED[key] = _schema_problems(doc)
    return list(_CHECKED[key])


_CHECKED: dict[str, list[str]] = {}


def _schema_problems(doc: dict[str, Any]) -> list[str]:
    errors = list(_schema_validator().iter_errors(doc))
    # A key that fails its subschema also shows up as "unevaluated" where it sits: say the cause.
    causes = [e for e in errors if e.validator != "unevaluatedProperties"]
    errors = sorted(causes or errors, key=lambda e: -len(e.absolute_path))  # the deepest first
    out: list[str] = []
    for e in errors:
        message = e.message if len(e.message) <= 200 else e.message[:200] + " …"
        line = f"{_where(doc, list(e.absolute_path))}: {message} (ODCS {API_VERSION} JSON Schema)"
        if line not in out:
            out.append(line)
    return out[:5]


def model_input(doc: dict[str, Any]) -> dict[str, Any]:
    """The internal model's input from an ODCS document; OdcsError names the place of the
    first thing that is not valid ODCS or not readable here."""
    _every_property_has_a_logical_type(doc)
    problems = schema_problems(doc)
    if problems:
        raise OdcsError("; ".join(problems))
    if doc["apiVersion"] != API_VERSION:
        raise OdcsError(f"apiVersion: contracts are ODCS {API_VERSION} documents")
    _only(doc, TOP_KEYS, "contract")
    version = _SEMVER.match(doc["version"])
    if version is None:
        raise OdcsError(
            "version: MAJOR.MINOR.PATCH with MAJOR >= 1, the contract's version (e.g. '1.0.0')"
        )
    schema = doc.get("schema") or []
    if len(schema) != 1:
        raise OdcsError(f"schema: a contract describes one object (its topic), not {len(schema)}")
    obj = schema[0]
    _only(obj, OBJECT_KEYS, "schema[0]")
    if obj.get("physicalType", "topic") != "topic":
        raise OdcsError("schema[0].physicalType: the object is a Kafka topic ('topic')")
    name = doc.get("name")
    for place, other in (("id", doc["id"]), ("schema[0].name", obj["name"])):
        if name is not None and other != name:
            raise OdcsError(f"{place}: must be the contract's name ({name!r}), not {other!r}")
    out: dict[str, Any] = {
        "version": _schema_version(obj) or int(version.group(1)),
        "semver": doc["version"],
    }
    _copy(doc, out, {"name": "name"})
    _copy(obj, out, {"physicalName": "topic", "description": "description"})
    out.update(_custom(doc.get("customProperties"), CONTRACT_CUSTOM, "customProperties"))
    out["fields"] = [_field(p) for p in obj.get("properties") or []]
    return out


def _schema_version(obj: dict[str, Any]) -> int | None:
    """The contract's version N as its `schema_version` property states it: the one value its
    events carry (`logicalTypeOptions: {minimum: N, maximum: N}`); None when not stated."""
    for p in obj.get("properties") or []:
        if isinstance(p, dict) and p.get("name") == "schema_version":
            options = p.get("logicalTypeOptions") or {}
            low, high = options.get("minimum"), options.get("maximum")
            if low is None and high is None:
                return None
            if low != high or type(low) is not int or low < 1:
                raise OdcsError(
                    "property 'schema_version': logicalTypeOptions minimum and maximum must both "
                    "be the contract's version N (the vN of its file name): the events of each "
                    "version are checked against their own contract"
                )
            return low
    return None


def _every_property_has_a_logical_type(doc: dict[str, Any]) -> None:
    """Said plainly: without one, the JSON Schema's complaints (about maps and vectors) mislead."""
    schema = doc.get("schema")
    for obj in schema if isinstance(schema, list) else []:
        properties = obj.get("properties") if isinstance(obj, dict) else None
        for p in properties if isinstance(properties, list) else []:
            if isinstance(p, dict) and "logicalType" not in p:
                carried = ", ".join(sorted({lt for lt, _, _ in TYPES.values()}))
                raise OdcsError(f"property {p.get('name')!r}: logicalType is required ({carried})")


def _field(p: dict[str, Any]) -> dict[str, Any]:
    where = f"property {p['name']!r}"
    _only(p, PROPERTY_KEYS, where)
    out: dict[str, Any] = {"required": False}  # the standard's default
    _copy(p, out, {"name": "name", "required": "required", "description": "description",
                   "classification": "pii"})  # fmt: skip
    ftype = _field_type(p, where)
    if ftype is not None:
        out["type"] = ftype.value
        for option, value in (p.get("logicalTypeOptions") or {}).items():
            if option not in OPTIONS[ftype]:
                raise OdcsError(
                    f"{where}: logicalTypeOptions.{option} is not checked by this pipeline for "
                    f"{p['logicalType']} (it reads {', '.join(OPTIONS[ftype]) or 'none'})"
                )
            attribute = OPTIONS[ftype][option]
            if attribute is not None:
                out[attribute] = value
            elif value != _FIXED_OPTIONS[ftype][option]:
                fixed = _FIXED_OPTIONS[ftype][option]
                raise OdcsError(f"{where}: logicalTypeOptions.{option} must be {fixed!r}")
        expected = TYPES[ftype][2]
        if p.get("physicalType", expected) != expected:
            raise OdcsError(
                f"{where}: physicalType is the JSON type on the topic: {expected!r} for "
                f"logicalType {p['logicalType']}"
            )
    if "enum" in p:
        out["enum"] = _enum(p["enum"], f"{where}: enum")
    if "items" in p:
        items = p["items"]
        _only(items, ITEMS_KEYS, f"{where}: items")
        if items.get("logicalType") != "string" or items.get("physicalType", "string") != "string":
            raise OdcsError(f"{where}: items: list items are strings (logicalType: string)")
        out["items"] = {"enum": _enum(items.get("enum") or [], f"{where}: items.enum")}
    out.update(_custom(p.get("customProperties"), FIELD_CUSTOM, f"{where}: customProperties"))
    return out


def _field_type(p: dict[str, Any], where: str) -> FieldType | None:
    logical = p.get("logicalType")
    if logical is None:
        return None  # the model reports the missing logicalType
    fmt = (p.get("logicalTypeOptions") or {}).get("format") if logical == "string" else None
    for ftype, (lt, f, _) in TYPES.items():
        if lt == logical and f == fmt:
            return ftype
    if logical == "string":
        raise OdcsError(f"{where}: logicalTypeOptions.format: only 'uuid' is checked here")
    carried = sorted({lt for lt, _, _ in TYPES.values()})
    raise OdcsError(
        f"{where}: logicalType {logical!r} is not one this pipeline carries ({', '.join(carried)})"
    )


def _enum(entries: list[dict[str, Any]], where: str) -> list[Any]:
    for entry in entries:
        _only(entry, ENUM_VALUE_KEYS, where)
    return [entry["value"] for entry in entries]


def _custom(entries: list[dict[str, Any]] | None, known: dict[str, str], where: str) -> dict:
    out: dict[str, Any] = {}
    for entry in entries or []:
        _only(entry, CUSTOM_KEYS, where)
        name = entry["property"]
        if name not in known:
            raise OdcsError(
                f"{where}: unknown custom property {name!r} (this pipeline reads "
                f"{', '.join(known)})"
            )
        if known[name] in out:
            raise OdcsError(f"{where}: custom property {name!r} is given twice")
        out[known[name]] = entry["value"]
    return out


def _only(node: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in node:
        if key not in allowed:
            raise OdcsError(
                f"{where}: {key!r} is valid ODCS but this pipeline does not read it, so it would "
                "not be enforced: leave it out (docs/architecture.md, 'Contracts drive the code')"
            )


def _copy(src: dict[str, Any], dst: dict[str, Any], keys: dict[str, str]) -> None:
    for odcs_key, internal in keys.items():
        if odcs_key in src:
            dst[internal] = src[odcs_key]


def _where(doc: dict[str, Any], path: list[Any]) -> str:
    """`property 'town': logicalTypeOptions` for a path into a property, else a dotted path."""
    if len(path) >= 4 and path[0] == "schema" and path[2] == "properties":
        try:
            name = doc["schema"][path[1]]["properties"][path[3]]["name"]
        except (KeyError, IndexError, TypeError):
            name = f"#{path[3] + 1}"
        rest = _dotted(path[4:])
        return f"property {name!r}" + (f": {rest}" if rest else "")
    return _dotted(path) or "contract"


def _dotted(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: Any, data: dict[str, Any]) -> str:
    """A model error (pydantic ErrorDetails) located in the ODCS document's terms."""
    return describe_error(
        error, data, item="property", field_places=FIELD_PLACES, contract_places=CONTRACT_PLACES
    )


# -- writing --------------------------------------------------------------------------------------
# Every FieldSpec attribute has a place above: a new attribute must get one (a test checks).
WRITTEN_FIELD_ATTRIBUTES = {"name", "type", "required", "pii", "description", "enum", "items",
                            *FIELD_PLACES}  # fmt: skip
WRITTEN_CONTRACT_ATTRIBUTES = {"name", "version", "semver", "compatibility", "topic",
                               "description", "event_time", "key", "disclosure", "fields",
                               "path"}  # fmt: skip


def to_odcs(contract: Contract) -> dict[str, Any]:
    """The ODCS document of a contract (what `visitshare contracts convert` writes)."""
    unmapped = set(Contract.model_fields) - WRITTEN_CONTRACT_ATTRIBUTES
    unmapped |= set(FieldSpec.model_fields) - WRITTEN_FIELD_ATTRIBUTES
    if unmapped:
        raise OdcsError(f"no ODCS place for {sorted(unmapped)}: add it to contracts/odcs.py")
    c = contract
    custom = [
        {"property": "eventTime", "value": c.event_time},
        {"property": "key", "value": list(c.key)},
    ]
    if "compatibility" in c.model_fields_set:
        custom.append({"property": "compatibility", "value": c.compatibility})
    if "disclosure" in c.model_fields_set:
        block = c.disclosure.model_dump(mode="json", exclude_unset=True)
        custom.append({"property": "disclosure", "value": _plain(block)})
    return {
        "apiVersion": API_VERSION,
        "kind": "DataContract",
        "id": c.name,
        "name": c.name,
        "version": c.semver,
        "status": "active",
        "schema": [
            {
                "name": c.name,
                "physicalName": c.topic,
                "physicalType": "topic",
                "logicalType": "object",
                "description": c.description,
                "properties": [_property(f) for f in c.fields],
            }
        ],
        "customProperties": custom,
    }


def _property(f: FieldSpec) -> dict[str, Any]:
    logical, _, physical = TYPES[f.type]
    p: dict[str, Any] = {
        "name": f.name,
        "logicalType": logical,
        "physicalType": physical,
        "required": f.required,
        "classification": f.pii.value,
        "description": f.description,
    }
    options = {}
    for option, attribute in OPTIONS[f.type].items():
        value = getattr(f, attribute) if attribute else _FIXED_OPTIONS[f.type][option]
        if value is not None:
            options[option] = _plain(value)
    if options:
        p["logicalTypeOptions"] = options
    if f.enum is not None:
        p["enum"] = [{"value": v} for v in f.enum]
    if f.items is not None:
        p["items"] = {
            "logicalType": "string",
            "physicalType": "string",
            "enum": [{"value": v} for v in f.items.enum],
        }
    custom = []
    for name, attribute in FIELD_CUSTOM.items():
        value = getattr(f, attribute)
        if attribute == "disclosure" and value is not None:
            value = _rule(value)
        elif attribute == "domain" and value is not None:
            value = value.value
        if value not in (None, False, []):
            custom.append({"property": name, "value": value})
    if custom:
        p["customProperties"] = custom
    return p


def _plain(value: Any) -> Any:
    """As a person writes it: a timestamp in ISO 8601, 2 rather than 2.0 (the model reads both
    as the same number)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _rule(d: Disclosure) -> Any:
    """A disclosure rule in the short form a contract writes: `drop`, `{coarsen: day}` …"""
    if d.action in ("keep", "drop"):
        return d.action
    param = d.namespace if d.action == "pseudonymize" else getattr(d, d.action)
    return {d.action: param}


def dump(doc: dict[str, Any], header: str = "") -> str:
    """YAML text of a document: block style, short leaf collections inline, no line wrapping."""
    return header + yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000
    )


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)  # indent lists under their key


def _short(data: Any) -> bool:
    text = json.dumps(data, ensure_ascii=False)
    return len(text) <= 80 and "\\n" not in text


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> Any:
    flow = _short(data) and all(not isinstance(v, dict) or _short(v) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> Any:
    flow = _short(data) and all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = ">" if "\n" in data.rstrip("\n") or (data.endswith("\n") and len(data) > 80) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def header(contract: Contract) -> str:
    return (
        f"# Data contract {contract.id}: an Open Data Contract Standard (ODCS) {API_VERSION} "
        "document.\n# How to read and write one: docs/architecture.md, "
        '"Contracts drive the code".\n'
    )

"""The data-contract model: what one contract file in `schemas/` says (read by `loader.py`; an
Open Data Contract Standard v3 document maps onto it in `odcs.py`)."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from visitshare.errors import VisitShareError


class ContractError(VisitShareError, ValueError):
    """A contract file that cannot be used; the message names the file and the field."""


class PiiClass(StrEnum):
    DIRECT_IDENTIFIER = "direct_identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE = "sensitive"
    FREE_TEXT = "free_text"
    PUBLIC = "public"


class FieldType(StrEnum):
    STRING = "string"
    UUID = "uuid"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    ARRAY = "array"


class Domain(StrEnum):
    """Value sets that come from reference data instead of the contract file."""

    TOKYO_MUNICIPALITY = "tokyo_municipality"
    TOKYO_TOWN = "tokyo_town"  # a town of the event's municipality_code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Disclosure(_Strict):
    """What the shared zone does with a field (applied by `visitshare.anonymize`).

    keep · drop · pseudonymize (namespace: fields pseudonymized in the same namespace, such as
    a household in visits and in incidents, get the same pseudonym) · coarsen (day | month)
    · cap (values above are set to the cap) · band (value → wider band).
    """

    action: Literal["keep", "drop", "pseudonymize", "coarsen", "cap", "band"]
    coarsen: Literal["day", "month"] | None = None
    cap: int | None = None
    band: dict[str, str] | None = None
    namespace: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        # YAML spells the rule as "drop" or {coarsen: day}; normalize to {action: ..., ...}.
        if isinstance(value, str):
            return {"action": value}
        if isinstance(value, dict) and "action" not in value and len(value) == 1:
            ((action, param),) = value.items()
            return {"action": action, "namespace" if action == "pseudonymize" else action: param}
        return value


class Items(_Strict):
    enum: list[str] = Field(min_length=1)


class FieldSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FieldType
    required: bool
    pii: PiiClass
    description: str = Field(min_length=1)
    enum: list[str] | None = Field(None, min_length=1)
    domain: Domain | None = None
    pattern: str | None = None
    max_length: int | None = Field(None, gt=0)
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = Field(None, gt=0)
    items: Items | None = None
    not_future: bool = False
    # A plausible lower bound for a timestamp (e.g. the programme's start): earlier values are
    # errors of the source system (0001-01-01, 1970-01-01), not history.
    earliest: AwareDatetime | None = None
    sensitive_values: list[str] | None = None
    # What a value reveals beyond itself: "place" or "time" (inferred for timestamps, Tokyo
    # geography and codes that start with a municipality code; declare it for anything else).
    narrows: list[Literal["place", "time"]] = Field(default_factory=list)
    disclosure: Disclosure | None = None

    @field_validator("pattern")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _keys_fit_type(self) -> FieldSpec:
        t = self.type
        string_like = t in (FieldType.STRING,)
        if (self.enum or self.pattern or self.domain) and not string_like:
            raise ValueError("enum, pattern and domain apply to string fields only")
        if self.max_length is not None and t not in (FieldType.STRING,):
            raise ValueError("max_length applies to string fields only")
        if (self.minimum is not None or self.maximum is not None) and t not in (
            FieldType.INTEGER,
            FieldType.NUMBER,
        ):
            raise ValueError("minimum/maximum apply to integer and number fields only")
        if t is FieldType.ARRAY and self.items is None:
            raise ValueError("an array field needs 'items' with its allowed values")
        if t is not FieldType.ARRAY and (self.items is not None or self.max_items is not None):
            raise ValueError("items/max_items apply to array fields only")
        if (self.not_future or self.earliest is not None) and t is not FieldType.TIMESTAMP:
            raise ValueError("not_future and earliest apply to timestamp fields only")
        if self.sensitive_values:
            allowed = set(self.allowed_values or ())
            if not set(self.sensitive_values) <= allowed:
                raise ValueError("sensitive_values must be among the field's allowed values")
        if self.disclosure is None and self.pii is not PiiClass.PUBLIC:
            raise ValueError(f"a {self.pii.value} field must declare a disclosure rule")
        d = self.disclosure
        if d is not None:
            if d.action == "pseudonymize" and self.pii is not PiiClass.DIRECT_IDENTIFIER:
                raise ValueError("only direct identifiers are pseudonymized")
            if d.action == "pseudonymize" and not d.namespace:
                raise ValueError("pseudonymize needs a namespace, e.g. {pseudonymize: household}")
            if self.pii in (PiiClass.DIRECT_IDENTIFIER, PiiClass.FREE_TEXT) and d.action not in (
                "drop",
                "pseudonymize",
            ):
                raise ValueError(f"a {self.pii.value} field must be dropped or pseudonymized")
            if d.action == "coarsen" and (t is not FieldType.TIMESTAMP or d.coarsen is None):
                raise ValueError("coarsen needs a timestamp field and a unit (day or month)")
            if d.action == "cap" and (t is not FieldType.INTEGER or not d.cap):
                raise ValueError("cap needs an integer field and a positive cap")
            if d.action == "band" and (not d.band or set(d.band) != set(self.enum or ())):
                raise ValueError("band must map every allowed value to a band")
        return self

    @property
    def carries(self) -> list[str]:
        """Place / time this field narrows: declared, or inferred from its type and format."""
        out = set(self.narrows)
        if self.type is FieldType.TIMESTAMP:
            out.add("time")
        if self.domain is not None:
            out.add("place")
        if self.pattern and self.pattern.startswith(("^[0-9]{5}", "^13[0-9]{3}")):
            out.add("place")  # a code that starts with the municipality's JIS code
        return sorted(out)

    @property
    def item_values(self) -> list[str]:
        """Allowed values of the items of an array field (the model makes an array field have
        `items`)."""
        assert self.items is not None, f"field {self.name!r} is not an array field"
        return self.items.enum

    @property
    def allowed_values(self) -> list[str] | None:
        """Allowed values of an enum field, or of the items of an array field."""
        if self.items is not None:
            return self.items.enum
        return self.enum


PLACE_LEVELS = ("town", "town_group", "municipality")
TIME_LEVELS = ("day", "week", "month", "quarter")


class QuasiIdentifier(_Strict):
    """A published column that narrows place or time, or is rare enough to single someone out,
    with its generalization hierarchy: `levels`, finest first.

    - place (a tokyo_town field): town → town_group (a public group of neighbouring towns) →
      municipality;
    - time (a timestamp field): day → week → month → quarter, from the field's own unit;
    - bands / categories (a value field): exact → the value's band or category → any;
    - any: exact → any (withheld);
    - `follows: <place field>`: published only where that field is at its finest level (a
      koban narrows place as much as its town);
    - a single level `[exact]`: never generalized (e.g. the municipality, the partition key).
    """

    levels: list[str] = Field(default_factory=lambda: ["exact"], min_length=1)
    bands: dict[str, str] | None = None
    categories: dict[str, str] | None = None
    follows: str | None = None
    # How much generalizing this column costs the shared view, relative to the others: the
    # recoding minimizes the weighted mean height of the levels it chooses.
    weight: float = Field(1.0, gt=0)


class AggregatePolicy(_Strict):
    """How the aggregate tables protect small counts.

    dp: noise from OpenDP (discrete Gaussian, zCDP) over the public domain of towns × months;
    each (re)publication of a partition spends `rho_per_release`, at most `rho_cap` in all;
    an open month is refreshed at most every `refresh_days`. threshold: counts from 1 to
    min_cell_count-1 suppressed (primary and secondary), and a published cell changes only by
    at least min_cell_count between releases.
    """

    mode: Literal["dp", "threshold"] = "dp"
    rho_per_release: float = Field(0.5, gt=0)
    rho_cap: float = Field(2.5, gt=0)
    refresh_days: int = Field(7, ge=1)
    # Each record counts at most this many items of each list (bounds its contribution).
    max_items_per_list: int = Field(3, ge=1)


class ContractDisclosure(_Strict):
    k_anonymity: int = Field(5, ge=2)
    # Sensitive attributes appear with a place finer than municipality only where each
    # equivalence class holds at least this many distinct values of them.
    l_diversity: int = Field(3, ge=2)
    min_cell_count: int = Field(10, ge=2)
    # Share of a partition's rows that local suppression may remove before coarser global
    # generalization is chosen instead.
    suppression_budget: float = Field(0.02, ge=0, le=1)
    # Record-level rows of a month are published once, this many days after it ends.
    close_after_days: int = Field(3, ge=0)
    aggregates: AggregatePolicy = Field(default_factory=AggregatePolicy)
    quasi_identifiers: dict[str, QuasiIdentifier] = Field(default_factory=dict)
    sensitive: list[str] = Field(default_factory=list)


def _check_hierarchy(
    f: FieldSpec,
    qi: QuasiIdentifier,
    by_name: dict[str, FieldSpec],
    qis: dict[str, QuasiIdentifier],
) -> None:
    """A hierarchy must fit its field: place levels for a town, time units for a timestamp
    from its own unit on, a band or category for every allowed value."""
    where = f"quasi-identifier {f.name!r}"
    levels = qi.levels
    if len(set(levels)) != len(levels):
        raise ValueError(f"{where}: a level is listed twice")
    if qi.follows is not None:
        target = by_name.get(qi.follows)
        if target is None or target.domain is not Domain.TOKYO_TOWN or qi.follows not in qis:
            raise ValueError(f"{where}: follows must name the contract's place quasi-identifier")
        return
    if f.domain is Domain.TOKYO_TOWN:
        if tuple(levels) != PLACE_LEVELS[: len(levels)] or levels[-1] != "municipality":
            raise ValueError(f"{where}: place levels are town, town_group, municipality")
        if "municipality_code" not in qis:  # listed ones are published (checked by the caller)
            raise ValueError(
                f"{where}: a town is recoded up to its municipality, so the contract must "
                "publish municipality_code as a quasi-identifier"
            )
        return
    if f.type is FieldType.TIMESTAMP:
        unit = f.disclosure.coarsen if f.disclosure and f.disclosure.action == "coarsen" else None
        if unit is None or levels[0] != unit:
            raise ValueError(f"{where}: time levels start at the field's own unit ({unit})")
        order = [TIME_LEVELS.index(x) if x in TIME_LEVELS else -1 for x in levels]
        if -1 in order or order != sorted(order):
            raise ValueError(f"{where}: time levels go from finer to coarser: {TIME_LEVELS}")
        return
    if levels == ["exact"]:
        return
    allowed = {"exact", "band", "category", "any"}
    if (
        levels[0] != "exact"
        or not set(levels) <= allowed
        or levels[-1] not in ("any", "band", "category")
    ):
        raise ValueError(f"{where}: levels are exact, then band or category, then any")
    values = (
        set(f.disclosure.band.values()) if f.disclosure and f.disclosure.band else set(f.enum or ())
    )
    if "band" in levels and (not qi.bands or (values and not values <= set(qi.bands))):
        raise ValueError(f"{where}: bands must give a band for every value")
    if "category" in levels and (not qi.categories or not set(f.enum or ()) <= set(qi.categories)):
        raise ValueError(f"{where}: categories must give a category for every value")


SEMVER = r"^([1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"


class Contract(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # The contract's version N: the `vN` of its file name and the `schema_version` its events
    # carry. A dataset may have several (`schemas/<name>.v1.yaml`, `.v2.yaml` …), each event
    # checked against its own (`ContractRegistry`, `evolution.py`).
    version: int = Field(ge=1)
    # The document's semantic version MAJOR.MINOR.PATCH (ODCS `version`; the old format has
    # none: N.0.0). Versions of one major are compatible (`compatibility`); a new major may
    # change anything, on a topic of its own.
    semver: str = Field("", pattern=SEMVER)
    # Which changes a later version of the same major may make: `backward` (the only rule
    # there is): it may only add optional fields, and widen what an earlier version allowed;
    # every event valid under an earlier version stays valid under it (`evolution.py`).
    compatibility: Literal["backward"] = "backward"
    topic: str = Field(min_length=1)
    description: str = Field(min_length=1)
    event_time: str
    key: list[str] = Field(min_length=1)
    disclosure: ContractDisclosure = Field(default_factory=ContractDisclosure)
    fields: list[FieldSpec] = Field(min_length=1)
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_semver(cls, value: Any) -> Any:
        # The old format gives only N: its semantic version is N.0.0.
        if isinstance(value, dict) and not value.get("semver") and "version" in value:
            return {**value, "semver": f"{value['version']}.0.0"}
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> Contract:
        names = [f.name for f in self.fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate field names: {sorted(dupes)}")
        by_name = {f.name: f for f in self.fields}
        for required in ("event_id", "schema_version", "produced_at"):
            if required not in by_name:
                raise ValueError(f"every contract needs the envelope field {required!r}")
        if by_name["event_id"].type is not FieldType.UUID:
            raise ValueError("event_id must be of type uuid")
        sv = by_name["schema_version"]
        if sv.type is not FieldType.INTEGER or not sv.required:
            raise ValueError("schema_version must be a required integer")
        if {sv.minimum, sv.maximum} - {None, float(self.version)}:
            raise ValueError(
                f"schema_version: its minimum and maximum are the contract's version "
                f"({self.version}); events of another version are checked against their own "
                "contract"
            )
        if self.major > self.version:
            raise ValueError(
                f"version {self.semver}: the major ({self.major}) cannot exceed the contract's "
                f"version N ({self.version}, its schema_version)"
            )
        et = by_name.get(self.event_time)
        if et is None or et.type is not FieldType.TIMESTAMP:
            raise ValueError(f"event_time {self.event_time!r} must name a timestamp field")
        for ref in (*self.key, *self.disclosure.quasi_identifiers, *self.disclosure.sensitive):
            if ref not in by_name:
                raise ValueError(f"{ref!r} is referenced but is not a field")
        for ref in self.key:
            if not by_name[ref].required or by_name[ref].type is not FieldType.STRING:
                raise ValueError(f"key field {ref!r} must be a required string")
        # k-anonymity is computed over the quasi-identifiers that are published: every published
        # quasi-identifier must be listed, and a listed one must be published. A published field
        # that narrows place or time is a quasi-identifier whatever its PII class says.
        listed = set(self.disclosure.quasi_identifiers)
        for f in self.fields:
            published = f.disclosure is None or f.disclosure.action not in ("drop", "pseudonymize")
            if not published:
                if f.name in listed:
                    raise ValueError(
                        f"{f.name!r} is listed in disclosure.quasi_identifiers but is not published"
                    )
                continue
            carries = f.carries
            if carries and f.name not in listed:
                raise ValueError(
                    f"{f.name!r} is published and narrows {' and '.join(carries)}: it must be a "
                    "quasi-identifier (disclosure.quasi_identifiers) with a hierarchy"
                )
            if f.pii is PiiClass.QUASI_IDENTIFIER and f.name not in listed:
                raise ValueError(
                    f"quasi-identifier {f.name!r} is published but not listed in "
                    "disclosure.quasi_identifiers"
                )
        for name, qi in self.disclosure.quasi_identifiers.items():
            _check_hierarchy(by_name[name], qi, by_name, self.disclosure.quasi_identifiers)
        for name in self.disclosure.sensitive:
            if name in listed:
                raise ValueError(f"{name!r} cannot be both sensitive and a quasi-identifier")
        towns = [f for f in self.fields if f.domain is Domain.TOKYO_TOWN]
        municipality = by_name.get("municipality_code")
        if towns and (municipality is None or municipality.domain is not Domain.TOKYO_MUNICIPALITY):
            raise ValueError(
                "a tokyo_town field needs a municipality_code field (tokyo_municipality)"
            )
        return self

    @property
    def fingerprint(self) -> str:
        """sha256 of the contract file (releases record which contracts they were made under)."""
        if self.path is None:
            raise ContractError(f"{self.id} was not loaded from a file: it has no fingerprint")
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def major(self) -> int:
        """The major of `semver`: versions of one major are compatible and share a topic."""
        return int(self.semver.split(".")[0])

    @property
    def semver_key(self) -> tuple[int, int, int]:
        major, minor, patch = (int(x) for x in self.semver.split("."))
        return major, minor, patch

    @property
    def id(self) -> str:
        """`name.vN`, as used in headers, file names and reports."""
        return f"{self.name}.v{self.version}"

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.id} has no field {name!r}")

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def fields_by_pii(self, *classes: PiiClass) -> list[FieldSpec]:
        return [f for f in self.fields if f.pii in classes]


def describe_error(
    error: ErrorDetails,
    raw: Any,
    *,
    item: str = "field",
    field_places: dict[str, str] | None = None,
    contract_places: dict[str, str] | None = None,
) -> str:
    """Render one pydantic error as `field 'x': key: message`, naming fields, not list indexes;
    `*_places` rename the model's keys to where the file says them (ODCS: `odcs.describe`)."""
    loc = list(error["loc"])
    where: list[str] = []
    places = contract_places or {}
    if len(loc) >= 2 and loc[0] == "fields" and isinstance(loc[1], int):
        try:
            name = raw["fields"][loc[1]].get("name", f"#{loc[1] + 1}")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = f"#{loc[1] + 1}"
        where.append(f"{item} {name!r}")
        loc = loc[2:]
        places = field_places or {}
    loc = [p for p in loc if not str(p).startswith("function-")]
    if loc and str(loc[0]) in places:
        loc[0] = places[str(loc[0])]
    rest = ".".join(str(p) for p in loc)
    if rest:
        where.append(rest)
    msg = error["msg"].removeprefix("Value error, ")
    return f"{': '.join(where) or 'contract'}: {msg}"


def dataset_names(directory: Path) -> list[str]:
    """The datasets that have a contract in `directory`, from the file names alone (no parsing:
    cheap enough for Airflow to call while parsing a DAG file)."""
    return sorted({p.name.split(".v", 1)[0] for p in directory.glob("*.v*.yaml")})

"""Event validation compiled from a contract: fast enough for the producer's hot path.

Messages name the field and the rule, never the offending value: values can be personal data,
and these messages end up in DLQ headers and logs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from visitshare.clock import SYSTEM_CLOCK, Clock
from visitshare.contracts import geography
from visitshare.contracts.fastpath import FastCheck
from visitshare.contracts.formats import UUID_RE, decode_value, parse_timestamp
from visitshare.contracts.model import Contract, Domain, FieldSpec, FieldType


class Reason(StrEnum):
    """Why an event was rejected. Stable codes: they are written to DLQ headers and reports."""

    NULL_VALUE = "null_value"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    DUPLICATE_KEY = "duplicate_key"
    OVERSIZED_EVENT = "oversized_event"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_VALUE = "unknown_value"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    BAD_FORMAT = "bad_format"
    FUTURE_TIMESTAMP = "future_timestamp"
    WRONG_SCHEMA_VERSION = "wrong_schema_version"
    CSV_ROW_SHAPE = "csv_row_shape"  # a CSV row whose cells do not match its header


@dataclass(frozen=True, slots=True)
class Violation:
    reason: Reason
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"reason": self.reason.value, "field": self.field, "message": self.message}


Check = Callable[[Any], "Violation | None"]


class EventValidator:
    """Validates decoded events (dicts) and raw message values (bytes) of one dataset.

    Given one contract, against that contract. Given the versions of a dataset that share its
    topic (`ContractRegistry.validator`), each event against the version its
    `schema_version` names; an event naming no version (or none, or not an integer) is checked
    against the latest, which reports why (`wrong_schema_version`, `missing_field`,
    `wrong_type`)."""

    def __init__(
        self,
        contract: Contract | Sequence[Contract],
        *,
        max_event_bytes: int = 65_536,
        future_tolerance: timedelta = timedelta(minutes=5),
        clock: Clock = SYSTEM_CLOCK,
    ):
        contracts = [contract] if isinstance(contract, Contract) else list(contract)
        if not contracts or len({c.name for c in contracts}) != 1:
            raise ValueError("an EventValidator checks the versions of one dataset")
        contracts.sort(key=lambda c: c.version)
        if len({c.version for c in contracts}) != len(contracts):
            raise ValueError(f"{contracts[0].name}: a version is given twice")
        self.max_event_bytes = max_event_bytes
        numbers = tuple(c.version for c in contracts)
        # Where a field unknown to one version is known: the hint its message gives.
        known_in: dict[str, Contract] = {}
        for c in contracts:
            for name in c.field_names:
                known_in.setdefault(name, c)
        self._versions = {
            c.version: _VersionCheck(c, numbers, known_in, future_tolerance, clock)
            for c in contracts
        }
        self._latest = self._versions[numbers[-1]]
        self._single = self._latest if len(contracts) == 1 else None
        self.contract = self._latest.contract  # the latest: what the zones' schema comes from
        self.contracts = contracts
        self._fast = self._latest._fast

    def _pick(self, event: Any) -> _VersionCheck:
        """The version an event is checked against: its own, else the latest."""
        if self._single is not None:
            return self._single
        if type(event) is dict:
            number = event.get("schema_version")
            if type(number) is int:  # not True, not 1.0: they would find version 1
                found = self._versions.get(number)
                if found is not None:
                    return found
        return self._latest

    def contract_of(self, event: Any) -> Contract:
        """The contract an event is checked against."""
        return self._pick(event).contract

    # -- public API ------------------------------------------------------------------------
    def value_fits(self, name: str, event: dict) -> bool:
        """Whether `event[name]` passes its own field's checks (type, format, allowed values,
        range, and for a town: that it is a town of the event's municipality), in the version
        the event names. What a screen may show of a rejected event without revealing a value
        put into the wrong field."""
        return self._pick(event).value_fits(name, event)

    def is_valid(self, event: Any) -> bool:
        """Valid or not, as fast as possible (no reasons)."""
        if self._single is not None:
            return self._single._fast(event)
        return self._pick(event)._fast(event)

    def validate(self, event: Any) -> list[Violation]:
        """All violations of a decoded event; an empty list means valid."""
        check = self._pick(event)
        if check._fast(event):
            return []
        return check.explain(event)

    def explain(self, event: Any) -> list[Violation]:
        """The violations of an event, found field by field (the slow, detailed path)."""
        return self._pick(event).explain(event)

    def check_size(self, raw: bytes) -> list[Violation]:
        if len(raw) > self.max_event_bytes:
            return [
                Violation(
                    Reason.OVERSIZED_EVENT,
                    None,
                    f"event is {len(raw)} bytes, limit {self.max_event_bytes}",
                )
            ]
        return []

    def decode(self, raw: bytes | None) -> tuple[Any, list[Violation]]:
        """Decode a message value: (event, []) or (None, the problems with the bytes)."""
        problems = [] if raw is None else self.check_size(raw)
        if problems:
            return None, problems
        event, problem, detail = decode_value(raw)
        if problem is not None:
            return None, [Violation(Reason(problem.value), None, detail)]
        return event, []

    def check_bytes(self, raw: bytes | None) -> tuple[dict | None, list[Violation]]:
        """Decode and validate a message value: (event, []) or (None, problems)."""
        event, problems = self.decode(raw)
        if not problems:
            problems = self.validate(event)
        return (None, problems) if problems else (event, [])


class _VersionCheck:
    """The checks of one contract version, compiled."""

    def __init__(
        self,
        contract: Contract,
        versions: tuple[int, ...],
        known_in: dict[str, Contract],
        future_tolerance: timedelta,
        clock: Clock,
    ):
        self.contract = contract
        self._versions = versions  # every version of the dataset checked with this one
        self._known_in = known_in
        self._future_tolerance = future_tolerance
        self._clock = clock
        self._known = frozenset(contract.field_names)
        self._checks: list[tuple[str, bool, Check]] = [
            (f.name, f.required, self._compile(f)) for f in contract.fields
        ]
        self._by_name = {name: check for name, _, check in self._checks}
        self._town_fields = [f.name for f in contract.fields if f.domain is Domain.TOKYO_TOWN]
        self._future_fields = [f.name for f in contract.fields if f.not_future]
        self._fast = FastCheck(contract, clock=clock, future_tolerance=future_tolerance)

    # -- compile one field into a check of a non-null value ------------------------------
    def _compile(self, f: FieldSpec) -> Check:
        name = f.name

        def bad(reason: Reason, message: str) -> Violation:
            return Violation(reason, name, f"field {name!r} {message}")

        t = f.type
        if t is FieldType.STRING or t is FieldType.UUID:
            pattern = re.compile(f.pattern) if f.pattern else None
            allowed = frozenset(f.enum) if f.enum else None
            if f.domain is Domain.TOKYO_MUNICIPALITY:
                allowed = frozenset(geography.municipalities())
            max_len = f.max_length

            def check_str(v: Any) -> Violation | None:
                if type(v) is not str:
                    return bad(Reason.WRONG_TYPE, f"must be a {t.value}, got {type(v).__name__}")
                if max_len is not None and len(v) > max_len:
                    return bad(Reason.TOO_LONG, f"is {len(v)} characters, limit {max_len}")
                if t is FieldType.UUID and UUID_RE.fullmatch(v) is None:
                    return bad(Reason.BAD_FORMAT, "is not a UUID")
                if allowed is not None and v not in allowed:
                    return bad(Reason.UNKNOWN_VALUE, "has a value that is not allowed")
                if pattern is not None and pattern.fullmatch(v) is None:
                    return bad(Reason.BAD_FORMAT, "does not match its format")
                return None

            return check_str

        if t is FieldType.INTEGER or t is FieldType.NUMBER:
            lo, hi = f.minimum, f.maximum
            if name == "schema_version":
                version = self.contract.version

                def check_version(v: Any) -> Violation | None:
                    if type(v) is not int:
                        return bad(Reason.WRONG_TYPE, f"must be an integer, got {type(v).__name__}")
                    if v != version:
                        if len(self._versions) == 1:
                            return bad(
                                Reason.WRONG_SCHEMA_VERSION,
                                f"must be {version} for {self.contract.id}",
                            )
                        known = ", ".join(str(n) for n in self._versions)
                        return bad(
                            Reason.WRONG_SCHEMA_VERSION,
                            f"names no version of {self.contract.name} with a contract ({known})",
                        )
                    return None

                return check_version
            types = (int,) if t is FieldType.INTEGER else (int, float)

            def check_num(v: Any) -> Violation | None:
                if type(v) not in types:
                    return bad(Reason.WRONG_TYPE, f"must be {t.value}, got {type(v).__name__}")
                if type(v) is float and not math.isfinite(v):
                    return bad(Reason.BAD_FORMAT, "is not a finite number")
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    return bad(Reason.OUT_OF_RANGE, f"is outside [{lo}, {hi}]")
                return None

            return check_num

        if t is FieldType.BOOLEAN:

            def check_bool(v: Any) -> Violation | None:
                if type(v) is not bool:
                    return bad(Reason.WRONG_TYPE, f"must be true or false, got {type(v).__name__}")
                return None

            return check_bool

        if t is FieldType.TIMESTAMP:
            earliest = f.earliest

            def check_ts(v: Any) -> Violation | None:
                if type(v) is not str:
                    return bad(
                        Reason.WRONG_TYPE, f"must be an ISO 8601 string, got {type(v).__name__}"
                    )
                ts = parse_timestamp(v) if len(v) <= 40 else None
                if ts is None:
                    return bad(Reason.BAD_FORMAT, "is not an RFC 3339 timestamp with UTC offset")
                if earliest is not None and ts < earliest:
                    return bad(Reason.OUT_OF_RANGE, f"is before {earliest.isoformat()}")
                return None

            return check_ts

        if t is FieldType.ARRAY:
            allowed_items = frozenset(f.item_values)
            max_items = f.max_items

            def check_array(v: Any) -> Violation | None:
                if type(v) is not list:
                    return bad(Reason.WRONG_TYPE, f"must be a list, got {type(v).__name__}")
                if max_items is not None and len(v) > max_items:
                    return bad(Reason.TOO_LONG, f"has {len(v)} items, limit {max_items}")
                for item in v:
                    if type(item) is not str:
                        return bad(Reason.WRONG_TYPE, "must hold strings only")
                    if item not in allowed_items:
                        return bad(Reason.UNKNOWN_VALUE, "holds a value that is not allowed")
                if len(set(v)) != len(v):
                    return bad(Reason.BAD_FORMAT, "repeats a value")
                return None

            return check_array

        raise AssertionError(t)

    def value_fits(self, name: str, event: dict) -> bool:
        check = self._by_name.get(name)
        v = event.get(name)
        if check is None or v is None or check(v) is not None:
            return False
        if name in self._town_fields:
            code = event.get("municipality_code")
            return isinstance(code, str) and geography.is_valid_town(code, v)
        return True

    def explain(self, event: Any) -> list[Violation]:
        """The violations of an event, found field by field (the slow, detailed path)."""
        if type(event) is not dict:
            return [Violation(Reason.NOT_AN_OBJECT, None, "event must be a JSON object")]
        out: list[Violation] = []
        get = event.get
        for name, required, check in self._checks:
            v = get(name)
            if v is None:
                if required:
                    out.append(
                        Violation(
                            Reason.MISSING_FIELD,
                            name,
                            f"required field {name!r} is missing or null",
                        )
                    )
            else:
                problem = check(v)
                if problem is not None:
                    out.append(problem)
        if not self._known.issuperset(event):
            for name in sorted(event.keys() - self._known):
                # The unknown field's name is shown; it is structure, not a value.
                other = self._known_in.get(name)
                hint = (
                    f"it is in {other.id}: such an event says schema_version {other.version}"
                    if other is not None
                    else "no PII class"
                )
                out.append(
                    Violation(
                        Reason.UNKNOWN_FIELD,
                        name[:64],
                        f"field {name[:64]!r} is not in {self.contract.id} ({hint})",
                    )
                )
        if out:
            return out
        # Checks that need other fields or the clock run only on otherwise valid events.
        for name in self._town_fields:
            if not geography.is_valid_town(event["municipality_code"], event[name]):
                out.append(
                    Violation(
                        Reason.UNKNOWN_VALUE,
                        name,
                        f"field {name!r} is not a town of municipality {event['municipality_code']}",
                    )
                )
        latest = self._clock.now() + self._future_tolerance
        for name in self._future_fields:
            v = event.get(name)
            if v is None:
                continue
            ts = parse_timestamp(v)
            assert ts is not None  # the field checks above passed: it parses
            if ts > latest:
                out.append(
                    Violation(Reason.FUTURE_TIMESTAMP, name, f"field {name!r} is in the future")
                )
        return out

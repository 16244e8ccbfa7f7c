"""Schema evolution: which versions of one dataset may live side by side.

A dataset may have several contract files, `schemas/<name>.v<N>.yaml`, N being the
`schema_version` its events carry. Each document's `version` is a semantic version M.m.p.
Producers send every version of the latest major at the same time, each event is checked
against the contract of its own `schema_version`, and the raw, validated and shared zones hold
them in one schema: the latest version's, a superset of the earlier ones (`ContractRegistry`).

The rule (a contract's `compatibility: backward`, the only one there is): within one major, a
later version (a higher N) may only

- add fields, each optional (`required: false`), with a PII class and a disclosure rule like any
  field, and (when published and narrowing place or time, or a quasi-identifier) a hierarchy;
- widen what an earlier version allowed: an enum or list gains values, a `maxLength`,
  `maxItems` or range grows or goes, a timestamp's earliest value moves back, `notFuture` or
  `required` goes (not on the key, the event time or the envelope);

so that every event valid under an earlier version is valid under the later one (with its own
`schema_version`), and the shared tables only gain columns: partners' readers keep working. It
may not remove or rename a field, change a type, a PII class, a disclosure rule, a pattern, a
domain, what a field narrows, or narrow anything (an enum loses a value, `required` becomes
true, a range narrows …); the topic, the event time, the key and the disclosure block stay as
they are (the block only gains the new fields' hierarchies and l-diversity). A change of this
kind needs a new major, on a topic of its own: two majors never share a topic.

`check(versions)` enforces it when a registry loads; every refusal names both files and the
field.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from visitshare.contracts.model import Contract, ContractError, FieldSpec

ENVELOPE = ("event_id", "schema_version", "produced_at")
# The contract-wide disclosure settings a later version of the same major keeps as they are.
SETTINGS = (
    "k_anonymity",
    "l_diversity",
    "min_cell_count",
    "suppression_budget",
    "close_after_days",
    "aggregates",
)


def check(contracts: Iterable[Contract]) -> None:
    """Refuse contracts that cannot live side by side: versions of a dataset out of order, an
    incompatible change within a major, two majors (or two datasets) on one topic."""
    by_name: dict[str, list[Contract]] = {}
    for c in contracts:
        by_name.setdefault(c.name, []).append(c)
    topics: dict[str, Contract] = {}
    for name in sorted(by_name):
        versions = sorted(by_name[name], key=lambda c: c.version)
        for old, new in itertools.pairwise(versions):
            if new.semver_key <= old.semver_key:
                raise ContractError(
                    f"{_file(new)}: version {new.semver} must be later than {old.semver} of "
                    f"{_file(old)} (a higher schema version is a later contract)"
                )
            if new.major == old.major:
                compatible(old, new)
        for c in versions:
            other = topics.setdefault(c.topic, c)
            if other.name != c.name:
                raise ContractError(
                    f"{_file(c)}: topic {c.topic!r} already carries {other.name} "
                    f"({_file(other)}): one topic, one dataset"
                )
            if other.major != c.major:
                raise ContractError(
                    f"{_file(c)}: major version {c.major} publishes to topic {c.topic!r} like "
                    f"major {other.major} ({_file(other)}): a new major breaks compatibility, so "
                    "it needs a topic of its own"
                )


def compatible(old: Contract, new: Contract) -> None:
    """Refuse `new` unless it is a compatible later version of `old` (same major)."""
    where = f"{_file(new)} (version {new.semver}) against {_file(old)} (version {old.semver})"

    def refuse(problem: str) -> None:
        raise ContractError(
            f"{where}: {problem}; within major {old.major} a later version may only add optional "
            "fields and widen what was allowed (docs/architecture.md, 'Schema evolution'). A "
            "breaking change needs a new major on its own topic"
        )

    for attribute, label in (
        ("topic", "the topic (schema[0].physicalName)"),
        ("event_time", "customProperties.eventTime"),
        ("key", "customProperties.key"),
    ):
        if getattr(old, attribute) != getattr(new, attribute):
            refuse(f"{label} changed")
    fields = {f.name: f for f in new.fields}
    for f in old.fields:
        if f.name not in fields:
            refuse(f"property {f.name!r} was removed or renamed")
        problem = _field_change(f, fields[f.name])
        if problem:
            refuse(f"property {f.name!r}: {problem}")
    if old.field(old.event_time).required and not fields[old.event_time].required:
        refuse(f"property {old.event_time!r}: the event time stays required")
    added = set(fields) - set(old.field_names)
    for name in sorted(added):
        if fields[name].required:
            refuse(
                f"property {name!r} is new and required: events of the earlier version lack it "
                "(an added field has required: false)"
            )
    problem = _disclosure_change(old, new, added)
    if problem:
        refuse(f"customProperties.disclosure: {problem}")


def _field_change(old: FieldSpec, new: FieldSpec) -> str | None:
    """What makes `new` not a compatible later form of field `old` (None: it is)."""
    for attribute, label in (
        ("type", "logicalType"),
        ("pii", "classification"),
        ("pattern", "logicalTypeOptions.pattern"),
        ("domain", "customProperties.domain"),
        ("narrows", "customProperties.narrows"),
    ):
        if getattr(old, attribute) != getattr(new, attribute):
            return f"{label} changed"
    if old.name == "schema_version":
        return None  # each version's own N (its minimum and maximum)
    if not old.required and new.required:
        return "required became true (events of the earlier version may lack it)"
    if old.required and not new.required and old.name in ENVELOPE:
        return "an envelope field stays required"
    for label, before, after in (
        ("enum", old.enum, new.enum),
        (
            "items.enum",
            old.items.enum if old.items else None,
            new.items.enum if new.items else None,
        ),
    ):
        if before is None and after is not None:
            return f"{label} added (a restriction the earlier version did not have)"
        if before is not None and (after is None or not set(before) <= set(after)):
            return f"{label} lost values"
    for attribute, label in (
        ("max_length", "logicalTypeOptions.maxLength"),
        ("max_items", "logicalTypeOptions.maxItems"),
        ("maximum", "logicalTypeOptions.maximum"),
    ):
        before, after = getattr(old, attribute), getattr(new, attribute)
        if after is not None and (before is None or after < before):
            return f"{label} narrowed"
    for attribute, label in (
        ("minimum", "logicalTypeOptions.minimum"),
        ("earliest", "logicalTypeOptions.minimum"),
    ):
        before, after = getattr(old, attribute), getattr(new, attribute)
        if after is not None and (before is None or after > before):
            return f"{label} narrowed"
    if new.not_future and not old.not_future:
        return "customProperties.notFuture added (a restriction)"
    if not _same_rule(old, new):
        return "customProperties.disclosure (the field's disclosure rule) changed"
    kept = set(old.allowed_values or ())
    before_sensitive = set(old.sensitive_values or ())
    after_sensitive = set(new.sensitive_values or ())
    if after_sensitive & kept != before_sensitive:
        return "customProperties.sensitiveValues changed for values the earlier version had"
    return None


def _same_rule(old: FieldSpec, new: FieldSpec) -> bool:
    """The same disclosure rule; a band may map the values an enum gained, nothing else."""
    a, b = old.disclosure, new.disclosure
    if a is None or b is None:
        return a == b
    if a.action == b.action == "band" and a.band is not None and b.band is not None:
        return all(b.band.get(value) == band for value, band in a.band.items())
    return a == b


def _disclosure_change(old: Contract, new: Contract, added: set[str]) -> str | None:
    a, b = old.disclosure, new.disclosure
    for key in SETTINGS:
        if getattr(a, key) != getattr(b, key):
            return f"{key} changed"
    for name, qi in a.quasi_identifiers.items():
        after = b.quasi_identifiers.get(name)
        if after is None:
            return f"quasi_identifiers: {name!r} was removed"
        if after.levels != qi.levels or after.follows != qi.follows or after.weight != qi.weight:
            return f"quasi_identifiers: the hierarchy of {name!r} changed"
        for mapping in ("bands", "categories"):
            before_map, after_map = getattr(qi, mapping) or {}, getattr(after, mapping) or {}
            if any(after_map.get(k) != v for k, v in before_map.items()):
                return f"quasi_identifiers: the {mapping} of {name!r} changed"
    for name in set(b.quasi_identifiers) - set(a.quasi_identifiers) - added:
        return f"quasi_identifiers: {name!r} is listed now but is not a new field"
    if not set(a.sensitive) <= set(b.sensitive):
        return "sensitive: a column was removed"
    for name in set(b.sensitive) - set(a.sensitive) - added:
        return f"sensitive: {name!r} is listed now but is not a new field"
    return None


def _file(c: Contract) -> str:
    return c.path.name if c.path is not None else f"{c.id}.yaml"

"""Contract files: loading one (an ODCS v3 document, or the old format until every contract is
converted), the contracts of a folder, and converting an old file to ODCS."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from visitshare.contracts import evolution, odcs
from visitshare.contracts.model import Contract, ContractError, describe_error

if TYPE_CHECKING:
    from visitshare.contracts.validator import EventValidator


def load_contract(path: Path) -> Contract:
    """Load and check one contract file, an ODCS v3 document (`odcs.py`) or, until every
    contract is converted, the old format; raise ContractError naming the file and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"{path}: cannot read contract: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a contract must be a YAML mapping")
    describe: Callable[[ErrorDetails, Any], str] = describe_error
    if odcs.is_odcs(raw):
        try:
            raw = odcs.model_input(raw)
        except odcs.OdcsError as exc:
            raise ContractError(f"{path}: {exc}") from None
        describe = odcs.describe
    try:
        contract = Contract.model_validate({**raw, "path": path})
    except ValidationError as exc:
        details = "; ".join(describe(e, raw) for e in exc.errors())
        raise ContractError(f"{path}: {details}") from None
    expected = f"{contract.name}.v{contract.version}.yaml"
    if path.name != expected:
        raise ContractError(
            f"{path}: file name must be {expected} (the name inside, and the version N its "
            "events carry: schema_version's minimum and maximum, else the major of `version`)"
        )
    return contract


def convert_file(path: Path) -> bool:
    """Rewrite an old-format contract file as an ODCS document, in place; False when it is
    one already. The new text must load to the same contract, or the file is left alone."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from None
    if isinstance(raw, dict) and odcs.is_odcs(raw):
        return False
    old = load_contract(path)
    try:
        text = odcs.dump(odcs.to_odcs(old), odcs.header(old))
    except odcs.OdcsError as exc:
        raise ContractError(f"{path}: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / path.name
        candidate.write_text(text, encoding="utf-8")
        new = load_contract(candidate)
    if new.model_dump(mode="json") != old.model_dump(mode="json"):
        raise ContractError(f"{path}: the ODCS document would load differently; not converted")
    staged = path.with_name(f".{path.name}.odcs")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
    return True


class ContractRegistry:
    """All contracts of a directory: every version of every dataset.

    A dataset may have several versions (`<name>.v1.yaml`, `<name>.v2.yaml` …). `get(name)` is
    the latest: within a major a later version is a superset of the earlier ones
    (`evolution.py`, checked here), so its schema is the one the raw, validated and shared
    zones use. Each event is checked against the version its `schema_version` names
    (`validator(name)`)."""

    def __init__(self, contracts: list[Contract]):
        evolution.check(contracts)
        self._by_id = {c.id: c for c in contracts}
        self._versions: dict[str, list[Contract]] = {}
        for c in sorted(contracts, key=lambda c: (c.name, c.version)):
            self._versions.setdefault(c.name, []).append(c)
        self._latest = {name: versions[-1] for name, versions in self._versions.items()}

    @classmethod
    def load(cls, directory: Path) -> ContractRegistry:
        files = sorted(directory.glob("*.v*.yaml"))
        if not files:
            raise ContractError(f"{directory}: no contract files (*.vN.yaml)")
        return cls([load_contract(p) for p in files])

    def get(self, name: str) -> Contract:
        """A contract by name (its latest version) or by id (`visit_outcome.v1`)."""
        found = self._by_id.get(name) or self._latest.get(name)
        if found is None:
            raise KeyError(f"no contract {name!r}; known: {', '.join(sorted(self._latest))}")
        return found

    def versions(self, name: str) -> list[Contract]:
        """Every version of a dataset, oldest first."""
        return list(self._versions[self.get(name).name])

    def version(self, name: str, number: int) -> Contract:
        """One version of a dataset by its number N (the `schema_version` of its events)."""
        found = self._by_id.get(f"{self.get(name).name}.v{number}")
        if found is None:
            known = ", ".join(str(c.version) for c in self.versions(name))
            raise KeyError(f"{name} has no version {number} (it has {known})")
        return found

    def compatible(self, name: str) -> list[Contract]:
        """The versions whose events the dataset's topic carries: the latest and the earlier
        ones of its major (compatible with it, and on the same topic), oldest first."""
        latest = self.get(name)
        return [c for c in self.versions(name) if c.major == latest.major]

    def validator(self, name: str, **options: Any) -> EventValidator:
        """The contract check of a dataset's events: each against its own version."""
        from visitshare.contracts.validator import EventValidator

        return EventValidator(self.compatible(name), **options)

    def by_topic(self, topic: str) -> Contract:
        """The latest contract of the dataset version that publishes to `topic`."""
        for versions in self._versions.values():
            for c in reversed(versions):
                if c.topic == topic:
                    return c
        raise KeyError(f"no contract publishes to topic {topic!r}")

    def __iter__(self):
        """The latest version of every dataset."""
        return iter(self._latest.values())

    def all(self) -> list[Contract]:
        """Every version of every dataset, by name and version."""
        return [c for versions in self._versions.values() for c in versions]

    def names(self) -> list[str]:
        return sorted(self._latest)

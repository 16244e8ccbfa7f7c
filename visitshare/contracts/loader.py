"""Contract files: loading one (an ODCS v3 document, or the old format until every contract is
converted), the contracts of a folder, and converting an old file to ODCS."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from visitshare.contracts import odcs
from visitshare.contracts.model import Contract, ContractError, describe_error


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
        raise ContractError(f"{path}: file name must be {expected} (name and version inside)")
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
    """All contracts of a directory, by name (latest version) and by id (`name.vN`)."""

    def __init__(self, contracts: list[Contract]):
        self._by_id = {c.id: c for c in contracts}
        self._latest: dict[str, Contract] = {}
        for c in sorted(contracts, key=lambda c: c.version):
            self._latest[c.name] = c

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

    def by_topic(self, topic: str) -> Contract:
        for c in self._latest.values():
            if c.topic == topic:
                return c
        raise KeyError(f"no contract publishes to topic {topic!r}")

    def __iter__(self):
        return iter(self._latest.values())

    def names(self) -> list[str]:
        return sorted(self._latest)

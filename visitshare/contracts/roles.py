"""Which dataset plays which role in the outcome tables (`schemas/outcomes.yaml`), and which
record-level shared table each contract's rows go to.

Stage code asks for a role ("visits", "incidents"), never for a dataset by name: the mapping
lives next to the contracts. Every contract's rows are released at record level (anonymized,
k-anonymous over its quasi-identifiers): in the table named after its role, or, for a
dataset that plays no role, after the dataset itself. A new contract is a new shared table.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from visitshare.contracts.loader import ContractRegistry
from visitshare.contracts.model import Contract, ContractError

ROLES_FILE = "outcomes.yaml"


def outcome_roles(contracts_dir: Path) -> dict[str, Contract]:
    """role → contract, as declared in `<contracts_dir>/outcomes.yaml`."""
    return dict(_load(contracts_dir)[0])


def record_contracts(contracts_dir: Path) -> dict[str, Contract]:
    """Shared record-level table name → the contract of its rows: the outcome roles first (in
    their file's order), then every other dataset, by name."""
    return dict(_load(contracts_dir)[1])


def _load(contracts_dir: Path) -> tuple[dict[str, Contract], dict[str, Contract]]:
    """Parsed once per version of the folder's files (a release asks many times)."""
    stamp = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(contracts_dir.glob("*.yaml"))
    )
    key = (str(contracts_dir.resolve()), stamp)
    if key not in _CACHE:
        _CACHE.clear()
        registry = ContractRegistry.load(contracts_dir)
        roles = _load_roles(contracts_dir, registry)
        playing = {c.name for c in roles.values()}
        others = {
            c.name: c for c in sorted(registry, key=lambda c: c.name) if c.name not in playing
        }
        _CACHE[key] = (roles, roles | others)
    return _CACHE[key]


_CACHE: dict[tuple, tuple[dict[str, Contract], dict[str, Contract]]] = {}


def _load_roles(contracts_dir: Path, registry: ContractRegistry) -> dict[str, Contract]:
    path = contracts_dir / ROLES_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        roles = raw["roles"]
        return {role: registry.get(name) for role, name in roles.items()}
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the outcome roles: {exc.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"{path}: invalid outcome roles: {exc}") from None

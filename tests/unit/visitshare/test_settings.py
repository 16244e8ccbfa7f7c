from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from visitshare.settings import Settings


def test_embedded_defaults(isolated_env):
    s = Settings()
    assert s.embedded_broker
    assert s.bootstrap == "127.0.0.1:19092"
    assert s.db_url == f"sqlite:///{isolated_env.resolve() / 'visitshare.db'}"
    assert s.lake == isolated_env.resolve() / "lake"
    assert s.topic("visits.outcomes.v1") == "visits.outcomes.v1"


def test_external_bootstrap_switches_off_the_embedded_broker(monkeypatch):
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    s = Settings()
    assert not s.embedded_broker
    assert s.bootstrap == "kafka-1:9092,kafka-2:9092"


def test_settings_come_from_prefixed_variables_only(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "elsewhere:9092")  # not ours: ignored
    monkeypatch.setenv("VISITSHARE_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", "29092")
    s = Settings()
    assert s.embedded_broker and s.bootstrap == "127.0.0.1:29092"
    assert s.topic("releases.v1") == "staging.releases.v1"


def test_invalid_values_are_rejected(monkeypatch):
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", "70000")
    with pytest.raises(ValidationError, match="broker_port"):
        Settings()


def test_a_copy_with_another_home_moves_every_path(settings, tmp_path):
    assert settings.var  # read before copying
    other = settings.model_copy(update={"home": tmp_path / "elsewhere"})
    assert other.var == (tmp_path / "elsewhere").resolve()
    assert other.lake == other.var / "lake" and str(other.var) in other.db_url


def test_now_freezes_the_clock_every_component_reads(monkeypatch):
    monkeypatch.setenv("VISITSHARE_NOW", "2031-02-03T04:05:06+09:00")
    clock = Settings().clock
    assert clock.now() == datetime(2031, 2, 2, 19, 5, 6, tzinfo=UTC)
    assert clock.now().tzinfo is not None


def test_without_now_the_clock_is_the_system_clock():
    before = datetime.now(UTC)
    now = Settings().clock.now()
    assert before <= now <= datetime.now(UTC)


def test_a_naive_now_is_refused(monkeypatch):
    monkeypatch.setenv("VISITSHARE_NOW", "2031-02-03T04:05:06")
    with pytest.raises(ValidationError, match="timezone"):
        Settings()

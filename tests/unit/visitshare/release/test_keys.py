"""The pseudonym key: sources, refusals, the local key of the embedded default."""

import stat

import pytest

from visitshare.release.errors import PseudonymKeyError
from visitshare.release.keys import fingerprint, load_key
from visitshare.settings import Settings


def test_embedded_default_generates_one_private_key_and_reuses_it(settings, caplog):
    key = load_key(settings)
    path = settings.secrets_dir / "pseudonym.key"
    assert len(key) >= 32 and path.read_bytes().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated a local pseudonym key" in caplog.text
    assert load_key(settings) == key  # stable across runs


def test_production_refuses_without_a_key_and_takes_env_or_file(settings, tmp_path):
    with pytest.raises(PseudonymKeyError, match="production needs"):
        load_key(Settings(home=settings.home, environment="production"))
    assert not (settings.secrets_dir / "pseudonym.key").exists()  # nothing generated
    env = Settings(home=settings.home, environment="production", pseudonym_key="k" * 32)
    assert load_key(env) == b"k" * 32
    f = tmp_path / "key"
    f.write_bytes(b"f" * 40 + b"\n")
    assert load_key(Settings(home=settings.home, pseudonym_key_file=f)) == b"f" * 40
    with pytest.raises(PseudonymKeyError, match="cannot read"):
        load_key(Settings(home=settings.home, pseudonym_key_file=tmp_path / "missing"))
    with pytest.raises(PseudonymKeyError, match="at least 32"):
        load_key(Settings(home=settings.home, pseudonym_key="too short"))


def test_fingerprint_identifies_a_key_without_revealing_it():
    a, b = fingerprint(b"a" * 32), fingerprint(b"b" * 32)
    assert a != b and fingerprint(b"a" * 32) == a and "a" * 8 not in a

"""The pseudonym key: where it comes from, and its fingerprint (never the key itself).

Production (`VISITSHARE_ENVIRONMENT=production`) takes the key only from the environment
(`VISITSHARE_PSEUDONYM_KEY`) or a secrets file (`VISITSHARE_PSEUDONYM_KEY_FILE`) and refuses
to run without one. The embedded default generates a local key once, under var/secrets,
with a warning: pseudonyms stay stable across local releases but mean nothing elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from visitshare.release.errors import PseudonymKeyError
from visitshare.settings import Settings

log = logging.getLogger(__name__)

MIN_KEY_BYTES = 32


def _check(key: bytes, where: str) -> bytes:
    key = key.strip()
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"the pseudonym key from {where} is {len(key)} bytes; at least {MIN_KEY_BYTES} "
            "are needed (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


def load_key(settings: Settings) -> bytes:
    """The key to pseudonymize with, or a clear error."""
    if settings.pseudonym_key is not None:
        return _check(
            settings.pseudonym_key.get_secret_value().encode(), "VISITSHARE_PSEUDONYM_KEY"
        )
    if settings.pseudonym_key_file is not None:
        path = settings.pseudonym_key_file
        try:
            return _check(path.read_bytes(), str(path))
        except OSError as exc:
            raise PseudonymKeyError(
                f"cannot read the pseudonym key file {path}: {exc.strerror}"
            ) from None
    if settings.environment == "production":
        raise PseudonymKeyError(
            "no pseudonym key: production needs VISITSHARE_PSEUDONYM_KEY or "
            "VISITSHARE_PSEUDONYM_KEY_FILE (refusing to publish)"
        )
    return local_secret(settings.secrets_dir / "pseudonym.key", "pseudonym key")


def local_secret(path: Path, what: str) -> bytes:
    """The embedded default's secret in `path`, generated (32 random bytes, hex) on first use."""
    if path.exists():
        return _check(path.read_bytes(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.replace(tmp, path)  # two processes racing both write a valid key; one wins for good
    log.warning(
        "generated a local %s in %s (embedded default): production sets its own.", what, path
    )
    return _check(path.read_bytes(), str(path))


def fingerprint(key: bytes) -> str:
    """Identifies a key across releases without revealing it (HMAC of a fixed label)."""
    return hmac.new(key, b"visit-share key fingerprint", hashlib.sha256).hexdigest()[:16]

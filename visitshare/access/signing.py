"""Pre-signed file URLs of the sharing server: an HMAC over the file, partner, token and expiry.

A query answers with one URL per data file. The URL carries who it was issued to (partner,
token id) and until when, signed with the server's URL key; the file endpoint serves it only
if the signature matches, the expiry is in the future and the token is still valid, so a URL
that is altered in any part, passed the expiry, or issued to a revoked token gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from visitshare.access.errors import PartnerError
from visitshare.release.keys import MIN_KEY_BYTES, local_secret
from visitshare.settings import Settings


class SigningKeyError(PartnerError):
    """No usable URL-signing key."""


def url_key(settings: Settings) -> bytes:
    """The key file URLs are signed with (see the settings `share_url_key[_file]`)."""
    if settings.share_url_key is not None:
        key, where = settings.share_url_key.get_secret_value().encode(), "VISITSHARE_SHARE_URL_KEY"
    elif settings.share_url_key_file is not None:
        try:
            key, where = settings.share_url_key_file.read_bytes(), str(settings.share_url_key_file)
        except OSError as exc:
            raise SigningKeyError(
                f"cannot read the URL key file {settings.share_url_key_file}: {exc.strerror}"
            ) from None
    elif settings.environment == "production":
        raise SigningKeyError(
            "no URL-signing key: production needs VISITSHARE_SHARE_URL_KEY or "
            "VISITSHARE_SHARE_URL_KEY_FILE (refusing to serve)"
        )
    else:
        key, where = local_secret(settings.secrets_dir / "share-url.key", "URL-signing key"), ""
    key = key.strip()
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(f"the URL key from {where} is shorter than {MIN_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class Grant:
    """What a signed URL allows: one file, to one partner's token, until `expires` (epoch s)."""

    file: str  # the file's path under the warehouse
    partner: str
    token_id: str
    expires: int

    def signature(self, key: bytes) -> str:
        message = "\n".join(("v1", self.file, self.partner, self.token_id, str(self.expires)))
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def url(self, base: str, key: bytes) -> str:
        query = urlencode(
            {
                "partner": self.partner,
                "token": self.token_id,
                "expires": self.expires,
                "sig": self.signature(key),
            }
        )
        return f"{base}/files/{quote(self.file)}?{query}"

    def valid(self, signature: str, key: bytes, now: datetime) -> bool:
        return (
            hmac.compare_digest(self.signature(key), signature) and now.timestamp() < self.expires
        )

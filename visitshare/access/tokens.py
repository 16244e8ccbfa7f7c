"""Bearer tokens of the Delta Sharing server, and the profile file a partner receives.

A token is `vs1.<id>.<secret>`: the id names it (in `token list`, the access log, revocation)
and the 256-bit secret proves it. Only the SHA-256 of the whole token is stored, so the
database cannot give a token away; the token itself exists once, in the profile file written
by `token create` (mode 0600), which is handed to the partner. A token is valid from its
creation until it expires or is revoked, whichever comes first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from visitshare.access.errors import PartnerError
from visitshare.access.partners import Partner, load_partners
from visitshare.db import engine_for
from visitshare.db.tables import share_tokens
from visitshare.settings import Settings

PREFIX = "vs1"
_TOKEN = re.compile(r"^vs1\.([0-9a-f]{12})\.[A-Za-z0-9_-]{43}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([dhw])\s*$")


class TokenError(PartnerError):
    """A token request that cannot be carried out (unknown token, bad duration...)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str, max_days: int) -> timedelta:
    """'90d', '12h', '2w' → a positive timedelta no longer than `max_days`."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise TokenError(
            f"--expires must be a positive number of d, h or w (e.g. 90d), not {text!r}"
        )
    n, unit = int(m.group(1)), m.group(2)
    delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "w": timedelta(weeks=n)}[unit]
    if delta > timedelta(days=max_days):
        raise TokenError(f"--expires {text} is longer than the {max_days} days allowed")
    return delta


@dataclass(frozen=True)
class Issued:
    id: str
    partner: Partner
    token: str  # shown once: it goes into the profile file
    expires_at: datetime


def create(settings: Settings, partner_id: str, expires: str, comment: str | None = None) -> Issued:
    partner = load_partners(settings).get(partner_id)
    now = settings.clock.now()
    expires_at = now + parse_duration(expires, settings.share_token_max_days)
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"
    with engine_for(settings).begin() as conn:
        conn.execute(
            share_tokens.insert().values(
                id=token_id,
                partner_id=partner.id,
                token_hash=_hash(token),
                created_at=now,
                expires_at=expires_at,
                comment=comment,
            )
        )
    return Issued(token_id, partner, token, expires_at)


def endpoint(settings: Settings, tls: bool = False) -> str:
    """The server's address as partners reach it (the profile's `endpoint`)."""
    if settings.share_public_url:
        return settings.share_public_url.rstrip("/")
    scheme = "https" if tls else "http"
    return f"{scheme}://{settings.share_host}:{settings.share_port}/delta-sharing"


def write_profile(settings: Settings, issued: Issued, path: Path) -> Path:
    """The Delta Sharing profile file (shareCredentialsVersion 1), readable by its owner only."""
    profile = {
        "shareCredentialsVersion": 1,
        "endpoint": endpoint(settings),
        "bearerToken": issued.token,
        "expirationTime": issued.expires_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(profile, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Caller:
    """Who a valid token belongs to."""

    token_id: str
    partner: Partner


def authenticate(settings: Settings, token: str | None) -> Caller | None:
    """The caller a bearer token names, or None (unknown, malformed, expired or revoked)."""
    m = _TOKEN.match(token or "")
    if not m:
        return None
    row = _row(settings, m.group(1))
    if row is None or not hmac.compare_digest(row.token_hash, _hash(token or "")):
        return None
    return _live(settings, row)


def holder(settings: Settings, token_id: str) -> Caller | None:
    """Who a token id belongs to while the token is live (a signed file URL names the id, not
    the secret: the signature stands for the token)."""
    row = _row(settings, token_id)
    return None if row is None else _live(settings, row)


def _row(settings: Settings, token_id: str) -> sa.Row | None:
    with engine_for(settings).connect() as conn:
        return conn.execute(sa.select(share_tokens).where(share_tokens.c.id == token_id)).first()


def _live(settings: Settings, row: sa.Row) -> Caller | None:
    """The token's caller, unless it is revoked, expired, or its partner was removed."""
    if row.revoked_at is not None or row.expires_at <= settings.clock.now():
        return None
    partner = load_partners(settings).by_id.get(row.partner_id)
    return None if partner is None else Caller(row.id, partner)


def revoke(settings: Settings, token_id: str | None, partner_id: str | None) -> list[str]:
    """Revoke one token, or every live token of a partner; the ids revoked."""
    if (token_id is None) == (partner_id is None):
        raise TokenError("name a token id or --partner (one of them)")
    now = settings.clock.now()
    where: sa.ColumnElement[bool] = share_tokens.c.revoked_at.is_(None)
    if token_id is not None:
        where &= share_tokens.c.id == token_id
    else:
        where &= share_tokens.c.partner_id == partner_id
    with engine_for(settings).begin() as conn:
        ids = list(conn.execute(sa.select(share_tokens.c.id).where(where)).scalars())
        if token_id is not None and not ids:
            known = conn.execute(
                sa.select(share_tokens.c.id).where(share_tokens.c.id == token_id)
            ).first()
            raise TokenError(
                f"token {token_id} is already revoked" if known else f"no token {token_id!r}"
            )
        if ids:
            conn.execute(
                share_tokens.update().where(share_tokens.c.id.in_(ids)).values(revoked_at=now)
            )
    return ids


def listing(settings: Settings, partner_id: str | None = None) -> list[dict]:
    """Every token (never a secret or hash), with its state at `settings.clock`."""
    now = settings.clock.now()
    q = sa.select(share_tokens).order_by(share_tokens.c.created_at, share_tokens.c.id)
    if partner_id:
        q = q.where(share_tokens.c.partner_id == partner_id)
    with engine_for(settings).connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        state = "revoked" if r.revoked_at else "expired" if r.expires_at <= now else "active"
        out.append(
            {
                "id": r.id,
                "partner": r.partner_id,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "revoked_at": r.revoked_at,
                "state": state,
                "comment": r.comment,
            }
        )
    return out

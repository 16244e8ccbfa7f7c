"""Step 1 of a release: which validated files go in, split into shards of whole municipalities."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid

import sqlalchemy as sa

from visitshare.contracts.roles import outcome_roles
from visitshare.db import engine_for
from visitshare.db.tables import curated_files
from visitshare.release import keys
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Shard
from visitshare.release.records import last_closed_month
from visitshare.release.releases import latest_release
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 1. plan -----------------------------------------------------------------------------------
def plan(settings: Settings, force: bool = False, new_key: bool = False) -> Plan | None:
    """What the next release consists of; None when nothing changed since the latest one."""
    now = settings.clock.now()
    key_fp = keys.fingerprint(keys.load_key(settings))
    contracts = {c.id: c.fingerprint for c in outcome_roles(settings.contracts_dir).values()}
    engine = engine_for(settings)
    with engine.connect() as conn:
        files = conn.execute(
            sa.select(curated_files.c.id, curated_files.c.rows, curated_files.c.municipality_code)
            .where(curated_files.c.zone == "validated")
            .order_by(curated_files.c.id)
        ).all()
        latest = latest_release(conn)
    files = [f for f in files if f.rows > 0]
    if not files:
        raise ReleaseError(
            "nothing validated yet: no release (run `visitshare validate` after landing events)"
        )
    if latest is not None and latest.key_fingerprint != key_fp and not new_key:
        raise ReleaseError(
            f"the pseudonym key differs from the one release {latest.id} used (fingerprint "
            f"{latest.key_fingerprint}, now {key_fp}): every pseudonym would change. Restore "
            "the key, or publish with --new-key to start a new pseudonym series on purpose"
        )
    # A month that closed since the last release is new too: its record-level rows publish now.
    closing = min(
        c.disclosure.close_after_days for c in outcome_roles(settings.contracts_dir).values()
    )
    closed_through = last_closed_month(now, closing)
    fingerprint = hashlib.sha256(
        json.dumps([[f.id for f in files], contracts, key_fp, closed_through]).encode()
    ).hexdigest()
    if latest is not None and latest.input_fingerprint == fingerprint and not force:
        return None
    rows: dict[str, int] = {}
    for f in files:
        rows[f.municipality_code] = rows.get(f.municipality_code, 0) + f.rows
    n = min(len(rows), max(1, settings.publish_workers) * 2)
    bins: list[tuple[int, list[str]]] = [(0, []) for _ in range(n)]
    for muni in sorted(rows, key=lambda m: (-rows[m], m)):  # largest first, into the lightest
        i = min(range(n), key=lambda j: bins[j][0])
        bins[i] = (bins[i][0] + rows[muni], [*bins[i][1], muni])
    shards = []
    for i, (total, munis) in enumerate(bins):
        shards.append(Shard(index=i, municipalities=sorted(munis), rows=total))
    return Plan(
        token=now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        as_of=now,
        validated_upto=files[-1].id,
        input_fingerprint=fingerprint,
        key_fingerprint=key_fp,
        contracts=contracts,
        shards=shards,
    )

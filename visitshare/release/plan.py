"""Step 1 of a release: which partitions it recomputes, split into shards of whole municipalities.

A partition is one municipality × month (the unit inside which k-anonymity classes,
suppression groups and DP budgets live). An incremental release recomputes the partitions
that changed since the release it builds on and carries every other one over unchanged:

- partitions with newly validated rows (a validated file whose content sequence is past the
  previous release's `validated_upto`; compaction keeps a file's sequence, so it makes
  nothing new);
- partitions of months that closed since (their record-level rows publish now);
- aggregate partitions marked stale (changed but not refreshed yet: they may be now).

A full release (`--full`, the first release, a contract or key change, a release made before
incremental releases existed) recomputes every partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import defaultdict

import sqlalchemy as sa

from visitshare.contracts.roles import record_contracts
from visitshare.db import engine_for
from visitshare.db.tables import aggregate_states, content_seq, curated_files
from visitshare.quality.compact import validated_lineage
from visitshare.release import keys
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Shard
from visitshare.release.records import last_closed_month
from visitshare.release.releases import latest_release
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 1. plan -----------------------------------------------------------------------------------
def plan(
    settings: Settings, force: bool = False, new_key: bool = False, full: bool = False
) -> Plan | None:
    """What the next release consists of; None when nothing changed since the latest one."""
    now = settings.clock.now()
    key_fp = keys.fingerprint(keys.load_key(settings))
    roles = record_contracts(settings.contracts_dir)  # every contract: its rows are released
    contracts = {c.id: c.fingerprint for c in roles.values()}
    engine = engine_for(settings)
    seq = content_seq().label("seq")
    with engine.connect() as conn:
        files = conn.execute(
            sa.select(
                seq,
                curated_files.c.rows,
                curated_files.c.municipality_code,
                curated_files.c.month,
            )
            .where(curated_files.c.zone == "validated", curated_files.c.rows > 0)
            .order_by(seq)
        ).all()
        # What the fingerprint covers: the validated files as validation wrote them, also
        # those compaction replaced since (so compaction changes nothing a plan compares).
        lineage = (
            conn.execute(
                sa.select(content_seq()).where(validated_lineage(), curated_files.c.rows > 0)
            )
            .scalars()
            .all()
        )
        latest = latest_release(conn)
        stale = conn.execute(
            sa.select(aggregate_states.c.municipality_code, aggregate_states.c.period).where(
                aggregate_states.c.stale, aggregate_states.c.period != "all"
            )
        ).all()
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
    closing = min(c.disclosure.close_after_days for c in roles.values())
    closed_through = last_closed_month(now, closing)
    upto = max(f.seq for f in files)
    fingerprint = hashlib.sha256(
        json.dumps([sorted(lineage), contracts, key_fp, closed_through]).encode()
    ).hexdigest()
    if latest is not None and latest.input_fingerprint == fingerprint and not force:
        return None
    full = (
        full
        or latest is None
        or latest.full is None  # made before incremental releases
        or latest.closed_through is None
        or latest.contracts != contracts
        or latest.key_fingerprint != key_fp
    )
    present = {(f.municipality_code, f.month) for f in files}
    if full:
        touched = present
    else:
        assert latest is not None
        touched = {(f.municipality_code, f.month) for f in files if f.seq > latest.validated_upto}
        touched |= {p for p in present if latest.closed_through < p[1] <= closed_through}
        touched |= {(s.municipality_code, s.period) for s in stale} & present
    rows: dict[str, int] = defaultdict(int)
    for f in files:
        if (f.municipality_code, f.month) in touched:
            rows[f.municipality_code] += f.rows
    n = max(1, min(len(rows), settings.publish_workers * 2))  # one (empty) shard at least
    if settings.profile == "embedded" and sum(rows.values()) < settings.publish_in_process_rows:
        n = 1  # built in the publishing process: one shard reads each state file once
    # (On the cluster profile every shard is a task of its own, spread over the workers.)
    bins: list[tuple[int, list[str]]] = [(0, []) for _ in range(n)]
    for muni in sorted(rows, key=lambda m: (-rows[m], m)):  # largest first, into the lightest
        i = min(range(n), key=lambda j: bins[j][0])
        bins[i] = (bins[i][0] + rows[muni], [*bins[i][1], muni])
    shards = []
    for i, (total, munis) in enumerate(bins):
        parts = sorted(p for p in touched if p[0] in munis)
        shards.append(Shard(index=i, municipalities=sorted(munis), partitions=parts, rows=total))
    return Plan(
        token=now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        as_of=now,
        validated_upto=upto,
        input_fingerprint=fingerprint,
        key_fingerprint=key_fp,
        contracts=contracts,
        shards=shards,
        full=full,
        previous=latest.id if latest is not None else None,
        previous_upto=latest.validated_upto if latest is not None and not full else 0,
        closed_through=closed_through,
        touched=sorted(touched),
    )

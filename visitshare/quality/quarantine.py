"""The quarantine: see what failed and why, and re-validate it after a fix.

`release` runs the current contract and suite again over quarantined rows (all, or those with
one reason). Rows that pass move to the validated zone; the others stay, with their reasons
brought up to date. Rows are moved, never copied: valid + quarantined still equals landed.
Duplicates and values that never decoded stay where they are (nothing a fix could change).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from visitshare.contracts import PiiClass
from visitshare.db.locks import named_lock
from visitshare.db.tables import curated_files
from visitshare.lake import lake_for
from visitshare.producing.topics import is_dlq
from visitshare.quality.gxrun import ReportsSite
from visitshare.quality.records import RunStatus, ValidationRun
from visitshare.quality.validate import Validator
from visitshare.settings import Settings

KEEP_REASONS = ("duplicate_event_id", "decode:")
MASK = "•••"  # no fix of contract or suite changes these


@dataclass(frozen=True)
class QuarantineCount:
    dataset: str
    reason: str
    rows: int


def _quarantine_files(conn, dataset: str | None = None) -> list:
    query = (
        sa.select(curated_files)
        .where(curated_files.c.zone == "quarantine")
        .order_by(curated_files.c.id)
    )
    if dataset:
        query = query.where(curated_files.c.dataset == dataset)
    return conn.execute(query).mappings().all()


def counts(settings: Settings, dataset: str | None = None) -> list[QuarantineCount]:
    """Quarantined rows per dataset and reason (a row with two reasons counts under both)."""
    from visitshare.db import engine_for

    tally: Counter = Counter()
    lake = lake_for(settings)
    with engine_for(settings).connect() as conn:
        for f in _quarantine_files(conn, dataset):
            reasons = lake.read_table(f["path"], columns=["reasons"]).column(0)
            for rs in reasons.to_pylist():
                for r in rs:
                    tally[(f["dataset"], r)] += 1
    return [QuarantineCount(d, r, n) for (d, r), n in sorted(tally.items())]


def rows(
    settings: Settings,
    dataset: str,
    reason: str | None = None,
    limit: int = 20,
    reveal: bool = False,
) -> list[dict]:
    """Quarantined rows: where they came from, why, and their fields.

    A field is shown only if it is not personal by its class (direct identifier, free text)
    and its value passes the field's own check (format, allowed values, range): a name put
    into `town` or a phone number into `koban_id` fails that check and stays masked. Values
    of events that do not decode, and unknown fields, are never shown. `reveal` shows all
    (the quarantine is police-only, but a terminal is not the place for them by default).
    """
    from visitshare.contracts import ContractRegistry
    from visitshare.contracts.formats import decode_value
    from visitshare.db import engine_for

    registry = ContractRegistry.load(settings.contracts_dir)
    contract = registry.get(dataset)  # the latest: its fields are every version's
    validator = registry.validator(dataset)  # a value is shown if it fits its own version
    personal = {
        f.name for f in contract.fields if f.pii in (PiiClass.DIRECT_IDENTIFIER, PiiClass.FREE_TEXT)
    }
    out = []
    lake = lake_for(settings)
    with engine_for(settings).connect() as conn:
        for f in _quarantine_files(conn, dataset):
            for row in lake.read_table(f["path"]).to_pylist():
                if reason and reason not in row["reasons"]:
                    continue
                event, _, _ = decode_value(row["kafka_value"])
                event = event or {}
                fields = {}
                for name in contract.field_names:
                    if name not in event:
                        continue
                    shown = reveal or (name not in personal and validator.value_fits(name, event))
                    fields[name] = event[name] if shown else MASK
                out.append(
                    {
                        "source": f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
                        "reasons": row["reasons"],
                        "parse_status": row["parse_status"],
                        "fields": fields,
                    }
                )
                if len(out) >= limit:
                    return out
    return out


def release(settings: Settings, dataset: str, reason: str | None = None) -> ValidationRun:
    """Re-validate quarantined rows with the current contract and suite; move those that pass.
    Serialized with validation runs of the dataset (they change the same files)."""
    v = Validator(settings, dataset)
    with named_lock(v.engine, f"validate-{v.dataset}"):
        return _release(settings, v, reason)


def _release(settings: Settings, v: Validator, reason: str | None) -> ValidationRun:
    started = settings.clock.now()
    run = ValidationRun(
        run_id=v.run_id, dataset=v.dataset, kind="release", status=RunStatus.NOTHING_NEW,
        contract=v.contract.id, suite_version=v.suite.version, started_at=started, finished_at=started,
    )  # fmt: skip
    docs = []
    with v.engine.connect() as conn:
        files = _quarantine_files(conn, v.dataset)
    for f in files:
        table = v.lake.read_table(f["path"])
        reasons = table.column("reasons").to_pylist()
        candidate = np.array(
            [
                (reason is None or reason in rs) and not any(r.startswith(KEEP_REASONS) for r in rs)
                and not is_dlq(t)
                for rs, t in zip(reasons, table.column("kafka_topic").to_pylist(), strict=True)
            ],
            bool,
        )  # fmt: skip
        if not candidate.any():
            continue
        idx = np.flatnonzero(candidate)
        values = table.column("kafka_value").take(pa.array(idx)).to_pylist()
        verdict = v.judge(table, values, idx, f"{v.run_id}/{f['batch']}")
        if verdict.docs is not None:
            docs.append((f"release-{f['batch']}", verdict.docs))
        new_reasons: dict[int, list[str]] = {int(i): [] for i in idx}
        for (reason_code, _), failing in verdict.failures.items():
            for i in failing:
                new_reasons[int(i)].append(reason_code)
        # These rows were first occurrences when validated (duplicates are never candidates).
        passed = [i for i, rs in new_reasons.items() if not rs]
        run.rows_in += len(idx)
        run.valid += len(passed)
        run.quarantined += len(idx) - len(passed)
        for rs in new_reasons.values():
            for r in rs:
                run.quarantined_by_reason[r] = run.quarantined_by_reason.get(r, 0) + 1
        updated = [new_reasons.get(i, rs) for i, rs in enumerate(reasons)]
        keep = np.array([i not in set(passed) for i in range(table.num_rows)], bool)
        remaining = table.set_column(
            table.schema.get_field_index("reasons"),
            "reasons",
            pa.array(updated, pa.list_(pa.string())),
        )
        remaining = remaining.filter(pa.array(keep))
        written = (
            v._write_validated(
                f"release-{v.run_id}-{f['batch']}", table.take(pa.array(passed, pa.int64()))
            )
            if passed
            else []
        )
        _commit_release(v, f, remaining, written)
    if run.rows_in:
        run.status = RunStatus.QUARANTINED if run.quarantined else RunStatus.PASSED
        run.data_docs = str(
            ReportsSite(
                settings.gx_dir, settings.reports_dir / "data_docs", settings.clock
            ).publish(v.suite, docs, v.run_id)
        )
    run.finished_at = settings.clock.now()
    v._record(run)
    return run


def _commit_release(v: Validator, f, remaining: pa.Table, written: list[dict]) -> None:
    now = v.clock.now()
    path = f["path"]
    if remaining.num_rows:
        nbytes, digest = v.lake.write_parquet(
            remaining, path, {"zone": "quarantine", "contract": v.contract.id}
        )
    with v.engine.begin() as conn:
        if remaining.num_rows:
            conn.execute(
                curated_files.update()
                .where(curated_files.c.id == f["id"])
                .values(rows=remaining.num_rows, bytes=nbytes, sha256=digest)
            )
        else:
            conn.execute(curated_files.delete().where(curated_files.c.id == f["id"]))
        if written:
            conn.execute(
                curated_files.insert(),
                [
                    {
                        **w,
                        "dataset": v.dataset,
                        "batch": f"release-{v.run_id}",
                        "run_id": v.run_id,
                        "created_at": now,
                    }
                    for w in written
                ],
            )
    if not remaining.num_rows:
        v.lake.remove(path)

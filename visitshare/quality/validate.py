"""The validate step: raw zone → validated zone + quarantine, with a run record and Data Docs.

For one dataset (its topic and its DLQ), the raw files landed since the last validation are
read in batches of about `quality_batch_rows`. In each batch:
1. rows from the DLQ go to quarantine with the producer's reason (`producer:<reason>`), and
   values that did not decode at all with `decode:<parse status>`;
2. repeated event_ids (a producer retried) go to quarantine as `duplicate_event_id`, within
   and across batches, the first occurrence staying;
3. the suite runs on the rest through GX; rows failing an error rule go to quarantine with
   one reason code per failed rule, warnings are only counted;
4. valid rows are written to `validated/<dataset>/municipality_code=<c>/month=<YYYY-MM>/`,
   quarantined rows (with their raw columns, reasons and source offsets) to
   `quarantine/<dataset>/`, all named after the batch, so a rerun rewrites the same files;
5. the batch commits: its files, the raw files it consumed, the event ids it saw.
Counts reconcile per batch and run (rows in = valid + quarantined) or the run fails.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from visitshare import manifest
from visitshare.contracts import Contract, ContractRegistry, arrow_schema
from visitshare.db import engine_for
from visitshare.lakefs import remove, write_parquet
from visitshare.quality.errors import QualityError
from visitshare.quality.frame import build_frame
from visitshare.quality.gxrun import ReportsSite, SuiteRunner, redact
from visitshare.quality.records import (
    RuleResult,
    RunStatus,
    ValidationRun,
    curated_files,
    validated_raw_files,
    validation_batches,
    validation_runs,
)
from visitshare.quality.suites import Severity, Suite, load_suite
from visitshare.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_ROWS = 10  # failing-row references kept per rule in the run record
SOURCE_COLUMNS = ["source_topic", "source_partition", "source_offset"]
DLQ_SUFFIX = ".dlq"


def validated_schema(contract: Contract) -> pa.Schema:
    """Validated rows: the contract's fields with their types, plus where each row came from."""
    return pa.schema(
        [
            *arrow_schema(contract),
            pa.field("source_topic", pa.string(), nullable=False),
            pa.field("source_partition", pa.int32(), nullable=False),
            pa.field("source_offset", pa.int64(), nullable=False),
        ],
        metadata={"contract": contract.id, "zone": "validated"},
    )


class Validator:
    def __init__(self, settings: Settings, dataset: str):
        self.settings = settings
        self.engine = engine_for(settings)
        self.contract = ContractRegistry.load(settings.contracts_dir).get(dataset)
        self.suite: Suite = load_suite(settings.expectations_dir, self.contract)
        self.dataset = self.contract.name
        self.topic = settings.topic(self.contract.topic)
        self.topics = [self.topic, self.topic + DLQ_SUFFIX]
        self.lake = settings.lake
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._runner: SuiteRunner | None = None
        self._seen: pa.Array | None = None  # event ids of earlier batches
        fields = self.contract.field_names
        self._frame_inputs = ["parse_status", *fields]
        self._validated_inputs = ["kafka_topic", "kafka_partition", "kafka_offset", *fields]

    # -- what to read ---------------------------------------------------------------------------
    def pending_files(self) -> list[tuple[int, manifest.RawFile]]:
        """Raw files of the dataset's topics no batch has consumed yet, oldest first."""
        rf, vf = manifest.raw_files, validated_raw_files
        query = (
            sa.select(rf)
            .outerjoin(vf, vf.c.raw_file_id == rf.c.id)
            .where(rf.c.topic.in_(self.topics), vf.c.raw_file_id.is_(None))
            .order_by(rf.c.id)
        )
        with self.engine.connect() as conn:
            return [
                (row.id, manifest.RawFile(**{k: v for k, v in row._mapping.items() if k != "id"}))
                for row in conn.execute(query)
            ]

    def batches(self) -> list[list[tuple[int, manifest.RawFile]]]:
        out, current, rows = [], [], 0
        for item in self.pending_files():
            current.append(item)
            rows += item[1].row_count
            if rows >= self.settings.quality_batch_rows:
                out.append(current)
                current, rows = [], 0
        if current:
            out.append(current)
        return out

    # -- one run ----------------------------------------------------------------------------
    def run(self) -> ValidationRun:
        started = datetime.now(UTC)
        run = ValidationRun(
            run_id=self.run_id,
            dataset=self.dataset,
            status=RunStatus.NOTHING_NEW,
            contract=self.contract.id,
            suite_version=self.suite.version,
            started_at=started,
            finished_at=started,
            rules=[
                RuleResult(
                    rule_id=r.rule_id, expectation=r.type, columns=r.columns, severity=r.severity.value,
                    reason=r.reason, source=r.source,
                )
                for r in self.suite.rules
            ],
        )  # fmt: skip
        docs_results = []
        for files in self.batches():
            batch = f"{files[0][0]:010d}-{files[-1][0]:010d}"
            result = self._validate_batch(batch, files, run)
            if result is not None:
                docs_results.append((batch, result))
            run.batches.append(batch)
        if run.batches:
            run.status = RunStatus.QUARANTINED if run.quarantined else RunStatus.PASSED
            site = ReportsSite(self.settings.gx_dir, self.settings.reports_dir / "data_docs")
            run.data_docs = str(site.publish(self.suite, docs_results, self.run_id))
        run.finished_at = datetime.now(UTC)
        if not run.reconciles:  # pragma: no cover - a bug; refuse to record it as fine
            raise QualityError(
                f"counts do not reconcile: {run.rows_in} in, {run.valid} valid, {run.quarantined} quarantined"
            )
        self._record(run)
        return run

    def _validate_batch(self, batch: str, files, run: ValidationRun):
        raw = pa.concat_tables(
            [pq.read_table(self.lake / f.path) for _, f in files], promote_options="default"
        )
        n = raw.num_rows
        reasons: list[list[str]] = [[] for _ in range(n)]
        rules: list[list[str]] = [[] for _ in range(n)]
        refs = _row_refs(raw)

        # 1. Rejected by the producer already: its reason is in the DLQ headers.
        is_dlq = pc.ends_with(raw.column("kafka_topic"), DLQ_SUFFIX).to_numpy(zero_copy_only=False)
        if is_dlq.any():
            headers = raw.column("kafka_headers").take(pa.array(np.flatnonzero(is_dlq))).to_pylist()
            for i, hs in zip(np.flatnonzero(is_dlq), headers, strict=True):
                h = {e["key"]: e["value"] for e in hs or []}
                reasons[i].append(
                    "producer:" + h.get("dlq_reason", b"unknown").decode(errors="replace")
                )
                rules[i].append("producer_contract_check")

        # 2. Values that did not decode into the contract's fields at all: nothing to check.
        status = raw.column("parse_status")
        decoded = pc.is_in(status, pa.array(["ok", "type_mismatch"])).to_numpy(zero_copy_only=False)
        undecodable = ~decoded & ~is_dlq
        for i in np.flatnonzero(undecodable):
            reasons[i].append(f"decode:{status[int(i)].as_py()}")
            rules[i].append("contract.decodes.event")
        _count(run, "contract.decodes.event", undecodable, refs)

        # 3. Duplicates by event_id, first occurrence kept (within the batch, then across).
        candidates = (
            ~is_dlq
            & ~undecodable
            & pc.is_valid(raw.column("event_id")).to_numpy(zero_copy_only=False)
        )
        duplicate, first_ids = self._duplicates(raw.column("event_id"), candidates)
        for i in np.flatnonzero(duplicate):
            reasons[i].append("duplicate_event_id")
            rules[i].append("event_id_unique")

        # 4. The suite, through GX, on everything else.
        checked = np.flatnonzero(~is_dlq & ~undecodable & ~duplicate)
        gx_result = None
        warnings: Counter = Counter()
        if len(checked):
            frame = build_frame(_rows(raw.select(self._frame_inputs), checked), self.contract)
            latest = datetime.now(UTC) + timedelta(seconds=self.settings.future_tolerance_seconds)
            if self._runner is None:
                self._runner = SuiteRunner(self.suite)
            outcomes, gx_result = self._runner.run(frame, latest, f"{self.run_id}/{batch}")
            del frame
            for rule in self.suite.rules:
                outcome = outcomes[rule.rule_id]
                record = next(r for r in run.rules if r.rule_id == rule.rule_id)
                record.evaluated += outcome.evaluated
                record.failed += outcome.unexpected
                for row_id in outcome.failing_rows:
                    i = int(checked[row_id])
                    if len(record.sample_rows) < SAMPLE_ROWS:
                        record.sample_rows.append(refs[i])
                    if rule.severity is Severity.ERROR:
                        reasons[i].append(rule.reason)
                        rules[i].append(rule.rule_id)
                    else:
                        warnings[rule.reason] += 1
        _count(run, "event_id_unique", duplicate, refs)

        # 5. Write both zones, named after the batch.
        bad = np.array([bool(r) for r in reasons], bool)
        valid_rows = np.flatnonzero(~bad)
        quarantine_rows = np.flatnonzero(bad)
        written = self._write_validated(
            batch, _rows(raw.select(self._validated_inputs), valid_rows)
        )
        if len(quarantine_rows):
            written += self._write_quarantine(
                batch,
                raw.take(pa.array(quarantine_rows, pa.int64())),
                [reasons[i] for i in quarantine_rows],
                [rules[i] for i in quarantine_rows],
            )

        # 6. Commit the batch.
        ranges = _source_ranges(files)
        counts = {
            "rows_in": n,
            "valid": len(valid_rows),
            "quarantined": len(quarantine_rows),
            "duplicates": int(duplicate.sum()),
        }
        if counts["rows_in"] != counts["valid"] + counts["quarantined"]:  # pragma: no cover
            raise QualityError(f"batch {batch}: counts do not reconcile: {counts}")
        self._commit(batch, files, written, first_ids, counts, ranges)
        run.rows_in += n
        run.valid += counts["valid"]
        run.quarantined += counts["quarantined"]
        run.duplicates += counts["duplicates"]
        for i in quarantine_rows:
            for reason in reasons[i]:
                run.quarantined_by_reason[reason] = run.quarantined_by_reason.get(reason, 0) + 1
        for reason, count in warnings.items():
            run.warnings_by_reason[reason] = run.warnings_by_reason.get(reason, 0) + count
        for topic, parts in ranges.items():
            merged = run.source_ranges.setdefault(topic, {})
            for p, (lo, hi) in parts.items():
                old = merged.get(p)
                merged[p] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]
        log.info(
            "validated %s batch %s: %d rows in, %d valid, %d quarantined (%d duplicates)",
            self.dataset, batch, n, counts["valid"], counts["quarantined"], counts["duplicates"],
        )  # fmt: skip
        return redact(gx_result) if gx_result is not None else None

    # -- zones ------------------------------------------------------------------------------
    def _write_validated(self, batch: str, rows: pa.Table) -> list[dict]:
        schema = validated_schema(self.contract)
        table = pa.table(
            {
                **{f.name: rows.column(f.name).cast(f.type) for f in arrow_schema(self.contract)},
                "source_topic": rows.column("kafka_topic"),
                "source_partition": rows.column("kafka_partition"),
                "source_offset": rows.column("kafka_offset"),
            }
        ).cast(schema)
        if not table.num_rows:
            return []
        month = pc.strftime(table.column(self.contract.event_time), format="%Y-%m")
        keys = pc.binary_join_element_wise(table.column("municipality_code"), month, "/")
        order = pc.sort_indices(
            pa.table({"k": keys, "i": pa.array(np.arange(table.num_rows))}),
            [("k", "ascending"), ("i", "ascending")],
        )
        table, keys = table.take(order), keys.take(order)
        out = []
        key_values = keys.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, key_values[1:] != key_values[:-1]])
        ends = np.r_[starts[1:], len(key_values)]
        for start, end in zip(starts, ends, strict=True):
            code, ym = key_values[start].split("/")
            rel = f"validated/{self.dataset}/municipality_code={code}/month={ym}/{batch}.parquet"
            part = table.slice(start, end - start)
            nbytes, digest = write_parquet(part, self.lake / rel)
            out.append(
                {
                    "zone": "validated",
                    "path": rel,
                    "rows": part.num_rows,
                    "bytes": nbytes,
                    "sha256": digest,
                    "municipality_code": code,
                    "month": ym,
                }
            )
        return out

    def _write_quarantine(self, batch: str, rows: pa.Table, reasons, rule_ids) -> list[dict]:
        table = rows.append_column("reasons", pa.array(reasons, pa.list_(pa.string())))
        table = table.append_column("rules", pa.array(rule_ids, pa.list_(pa.string())))
        rel = f"quarantine/{self.dataset}/{batch}.parquet"
        nbytes, digest = write_parquet(
            table, self.lake / rel, {"zone": "quarantine", "contract": self.contract.id}
        )
        return [
            {
                "zone": "quarantine",
                "path": rel,
                "rows": table.num_rows,
                "bytes": nbytes,
                "sha256": digest,
                "municipality_code": None,
                "month": None,
            }
        ]

    # -- state --------------------------------------------------------------------------------
    def _duplicates(
        self, event_ids: pa.ChunkedArray, candidates: np.ndarray
    ) -> tuple[np.ndarray, pa.Array]:
        """(rows repeating an event_id seen before, the batch's newly seen ids).

        Before: earlier in this batch (the first occurrence stays) or in an earlier batch (the
        ids of every batch are kept in the lake, see `_commit`).
        """
        n = len(event_ids)
        idx = np.flatnonzero(candidates)
        ids = event_ids.take(pa.array(idx))
        firsts = (
            pa.table({"id": ids, "i": pa.array(idx)})
            .group_by("id", use_threads=False)
            .aggregate([("i", "min")])
        )
        first_rows = firsts.column("i_min").to_numpy()
        first_ids = firsts.column("id").combine_chunks()
        earlier = self._seen_ids()
        if earlier is not None and len(earlier):
            known = pc.is_in(first_ids, value_set=earlier).to_numpy(zero_copy_only=False)
            first_rows, first_ids = first_rows[~known], first_ids.filter(pa.array(~known))
        keep = np.zeros(n, bool)
        keep[first_rows] = True
        duplicate = candidates & ~keep
        self._seen = first_ids if earlier is None else pa.concat_arrays([earlier, first_ids])
        return duplicate, first_ids

    def _seen_ids(self) -> pa.Array | None:
        """Event ids of earlier batches (read once per run from their id files)."""
        if self._seen is None:
            with self.engine.connect() as conn:
                paths = (
                    conn.execute(
                        sa.select(curated_files.c.path).where(
                            curated_files.c.dataset == self.dataset, curated_files.c.zone == "seen"
                        )
                    )
                    .scalars()
                    .all()
                )
            arrays = [
                pq.read_table(self.lake / p).column("event_id").combine_chunks() for p in paths
            ]
            self._seen = pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())
        return self._seen

    def _commit(self, batch, files, written, new_ids: pa.Array, counts, ranges) -> None:
        now = datetime.now(UTC)
        if len(new_ids):
            rel = f"state/seen/{self.dataset}/{batch}.parquet"
            nbytes, digest = write_parquet(pa.table({"event_id": new_ids}), self.lake / rel)
            written = [
                *written,
                {
                    "zone": "seen",
                    "path": rel,
                    "rows": len(new_ids),
                    "bytes": nbytes,
                    "sha256": digest,
                    "municipality_code": None,
                    "month": None,
                },
            ]
        with self.engine.begin() as conn:
            # A rerun of the same batch replaces what it wrote before (same names).
            old = (
                conn.execute(
                    sa.select(curated_files.c.path).where(
                        curated_files.c.dataset == self.dataset, curated_files.c.batch == batch
                    )
                )
                .scalars()
                .all()
            )
            conn.execute(
                curated_files.delete().where(
                    curated_files.c.dataset == self.dataset, curated_files.c.batch == batch
                )
            )
            if written:
                conn.execute(
                    curated_files.insert(),
                    [
                        {
                            **w,
                            "dataset": self.dataset,
                            "batch": batch,
                            "run_id": self.run_id,
                            "created_at": now,
                        }
                        for w in written
                    ],
                )
            conn.execute(
                validated_raw_files.insert(),
                [
                    {
                        "raw_file_id": fid,
                        "dataset": self.dataset,
                        "batch": batch,
                        "run_id": self.run_id,
                    }
                    for fid, _ in files
                ],
            )
            conn.execute(
                validation_batches.delete().where(
                    validation_batches.c.dataset == self.dataset,
                    validation_batches.c.batch == batch,
                )
            )
            conn.execute(
                validation_batches.insert().values(
                    dataset=self.dataset,
                    batch=batch,
                    run_id=self.run_id,
                    source_ranges=ranges,
                    **counts,
                )
            )
        for path in set(old) - {w["path"] for w in written}:
            remove(self.lake / path)

    def _record(self, run: ValidationRun) -> None:
        record = json.loads(run.model_dump_json())
        with self.engine.begin() as conn:
            conn.execute(
                validation_runs.insert().values(
                    run_id=run.run_id, dataset=run.dataset, kind=run.kind, status=run.status.value,
                    started_at=run.started_at, finished_at=run.finished_at, rows_in=run.rows_in,
                    valid=run.valid, quarantined=run.quarantined, record=record,
                )
            )  # fmt: skip
        folder = self.settings.reports_dir / "validation" / run.dataset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run.run_id}.json").write_text(run.model_dump_json(indent=2))


def _rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The given rows (all of them without a copy)."""
    return table if len(rows) == table.num_rows else table.take(pa.array(rows, pa.int64()))


def _count(run: ValidationRun, rule_id: str, failing: np.ndarray, refs: list[str]) -> None:
    """Add rows our code (not GX) found failing a rule to that rule's record."""
    record = next((r for r in run.rules if r.rule_id == rule_id), None)
    if record is None or not failing.any():
        return
    record.failed += int(failing.sum())
    room = SAMPLE_ROWS - len(record.sample_rows)
    record.sample_rows.extend(refs[i] for i in np.flatnonzero(failing)[: max(room, 0)])


def _row_refs(raw: pa.Table) -> list[str]:
    """ "topic[partition]@offset" for every row: how reports point at a row without its values."""
    return [
        f"{t}[{p}]@{o}"
        for t, p, o in zip(
            raw.column("kafka_topic").to_pylist(),
            raw.column("kafka_partition").to_pylist(),
            raw.column("kafka_offset").to_pylist(),
            strict=True,
        )
    ]


def _source_ranges(files) -> dict[str, dict[str, list[int]]]:
    ranges: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for _, f in files:
        old = ranges[f.topic].get(str(f.partition))
        lo, hi = f.first_offset, f.last_offset
        ranges[f.topic][str(f.partition)] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]
    return dict(ranges)


def validate(settings: Settings, dataset: str) -> ValidationRun:
    """Validate everything landed for `dataset` since the last run."""
    return Validator(settings, dataset).run()


def reset(settings: Settings, dataset: str) -> None:
    """Forget what validation did for a dataset (its files and state): the next run starts over."""
    engine = engine_for(settings)
    with engine.begin() as conn:
        paths = (
            conn.execute(sa.select(curated_files.c.path).where(curated_files.c.dataset == dataset))
            .scalars()
            .all()
        )
        for table in (curated_files, validated_raw_files, validation_batches):
            conn.execute(table.delete().where(table.c.dataset == dataset))
    for path in paths:
        remove(settings.lake / path)


def read_curated(settings: Settings, dataset: str, zone: str) -> pa.Table | None:
    """All rows of a dataset's zone, through the curated-files manifest."""
    engine = engine_for(settings)
    with engine.connect() as conn:
        paths = (
            conn.execute(
                sa.select(curated_files.c.path)
                .where(curated_files.c.dataset == dataset, curated_files.c.zone == zone)
                .order_by(curated_files.c.id)
            )
            .scalars()
            .all()
        )
    if not paths:
        return None
    return pa.concat_tables(
        [pq.read_table(settings.lake / p) for p in paths], promote_options="default"
    )


def last_runs(settings: Settings, limit: int = 20) -> list[ValidationRun]:
    engine = engine_for(settings)
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(validation_runs.c.record)
                .order_by(validation_runs.c.started_at.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
    return [ValidationRun.model_validate(r) for r in rows]

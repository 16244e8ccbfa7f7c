"""The validate step: raw zone → validated zone + quarantine, with a run record and Data Docs.

For one dataset (its topic and its DLQ), the raw files landed since the last validation are
taken in batches of about `quality_batch_rows`. For every row:
1. rows from the DLQ go to quarantine with the producer's reason (`producer:<reason>`), and
   values that did not decode at all with `decode:<parse status>`;
2. repeated event_ids (a producer retried) go to quarantine as `duplicate_event_id`, within
   and across batches and runs, the first occurrence staying;
3. the suite runs on the rest through GX; rows failing an error rule go to quarantine with
   one reason code per failed rule, warnings are only counted;
4. valid rows are written to `validated/<dataset>/municipality_code=<c>/month=<YYYY-MM>/`,
   quarantined rows (raw columns, reasons, source offsets) to `quarantine/<dataset>/`, all
   named after the batch, so a rerun of a batch rewrites the same files;
5. the batch commits: its files, the raw files it consumed, the event ids it saw.

Duplicates are decided first, for all batches, from the event_id column alone; then batches
are validated in parallel (`quality_workers` processes: GX is single-threaded Python) and
committed in order. Counts reconcile per batch and run (rows in = valid + quarantined).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from visitshare.contracts import Contract, ContractRegistry, Reason, arrow_schema
from visitshare.db import engine_for
from visitshare.db.locks import named_lock
from visitshare.db.tables import (
    curated_files,
    validated_raw_files,
    validation_batches,
    validation_runs,
)
from visitshare.lake import Lake, lake_for
from visitshare.landing import manifest, zones
from visitshare.processes import process_pool
from visitshare.producing.topics import DLQ_SUFFIX, dataset_topics
from visitshare.quality.contract import ContractCheck, reason_of_rule
from visitshare.quality.errors import QualityError
from visitshare.quality.records import RuleResult, RunStatus, ValidationRun
from visitshare.quality.suites import Severity, Suite, load_suite
from visitshare.settings import Settings

if TYPE_CHECKING:
    from visitshare.quality.gxrun import SuiteRunner

log = logging.getLogger(__name__)

SAMPLE_ROWS = 10  # failing-row references kept per rule in the run record
HEAVY = ("kafka_key", "kafka_value", "kafka_headers")  # raw columns read only where needed
REASON_CODES = frozenset(r.value for r in Reason)
CONTRACT_RULE = "contract"  # the producer's contract check, as one rule of the run record
RawFiles = list[tuple[int, manifest.RawFile]]  # (manifest id, file)


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


@dataclass
class BatchPlan:
    """One batch: its raw files and which of its rows repeat an event_id seen before."""

    name: str
    files: RawFiles
    duplicate: np.ndarray  # bool per row, rows in file order
    first_ids: pa.Array  # event ids this batch sees first


@dataclass
class BatchResult:
    """What validating one batch wrote and found (no database writes yet)."""

    name: str
    written: list[dict]
    rows_in: int
    valid: int
    quarantined: int
    duplicates: int
    quarantined_by_reason: Counter = field(default_factory=Counter)
    warnings_by_reason: Counter = field(default_factory=Counter)
    rules: dict[str, list] = field(default_factory=dict)  # rule_id → [evaluated, failed, samples]
    docs: dict | None = None  # the redacted GX result, as JSON
    pid: int = 0  # the process that validated it, and its peak memory so far (MB)
    peak_rss_mb: float = 0.0


@dataclass
class Verdict:
    """What the contract check and the suite found in some rows (row numbers, no values)."""

    failures: defaultdict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (reason, rule id) → rows
    warnings: defaultdict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    evaluated: Counter = field(default_factory=Counter)  # rule id → rows it looked at
    docs: dict | None = None  # the redacted GX result, as JSON


class Validator:
    def __init__(self, settings: Settings, dataset: str):
        self.settings = settings
        self.engine = engine_for(settings)
        registry = ContractRegistry.load(settings.contracts_dir)
        # The latest version: the validated zone's schema (every version's fields); each
        # event is checked against its own version (`contract_check`).
        self.contract = registry.get(dataset)
        self.suite: Suite = load_suite(settings.expectations_dir, self.contract)
        self.dataset = self.contract.name
        self.topic = settings.topic(self.contract.topic)
        self.topics = dataset_topics(settings, self.contract)
        self.lake = lake_for(settings)
        self.clock = settings.clock
        self.run_id = self.clock.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._runner: SuiteRunner | None = None  # created where batches are validated
        self.contract_check = ContractCheck(registry.compatible(dataset), settings)
        self.worker_peak_rss_mb: dict[int, float] = {}  # per process that validated batches
        fields = self.contract.field_names
        self._frame_inputs = ["parse_status", *fields]
        self._validated_inputs = ["kafka_topic", "kafka_partition", "kafka_offset", *fields]

    # -- what to read ---------------------------------------------------------------------------
    def pending_files(self) -> RawFiles:
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

    def batches(self) -> list[RawFiles]:
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
        started = self.clock.now()
        run = ValidationRun(
            run_id=self.run_id, dataset=self.dataset, status=RunStatus.NOTHING_NEW,
            contract=self.contract.id, suite_version=self.suite.version,
            started_at=started, finished_at=started,
            rules=[
                RuleResult(
                    rule_id=r.rule_id, expectation=r.type, columns=r.columns, severity=r.severity.value,
                    reason=r.reason, source=r.source,
                )
                for r in self.suite.rules
            ],
        )  # fmt: skip
        plans = self.plan(self.batches())
        docs = []
        for plan, result in zip(plans, self._process_all(plans), strict=True):
            self.worker_peak_rss_mb[result.pid] = max(
                self.worker_peak_rss_mb.get(result.pid, 0), result.peak_rss_mb
            )
            self._commit(plan, result)
            _add(run, plan, result)
            if result.docs is not None:
                docs.append((plan.name, result.docs))
        if run.batches:
            from visitshare.quality.gxrun import ReportsSite

            run.status = RunStatus.QUARANTINED if run.quarantined else RunStatus.PASSED
            site = ReportsSite(
                self.settings.gx_dir, self.settings.reports_dir / "data_docs", self.clock
            )
            run.data_docs = str(site.publish(self.suite, docs, self.run_id))
        run.finished_at = self.clock.now()
        if not run.reconciles:  # pragma: no cover - a bug; refuse to record it as fine
            raise QualityError(
                f"counts do not reconcile: {run.rows_in} in, {run.valid} valid, {run.quarantined} quarantined"
            )
        self._record(run)
        return run

    def _process_all(self, plans: list[BatchPlan]) -> list[BatchResult]:
        workers = min(self.settings.quality_workers, len(plans))
        if workers <= 1:
            return [self.process(plan) for plan in plans]
        with process_pool(workers, _init_worker, (self.settings, self.dataset)) as pool:
            return list(pool.map(_process_in_worker, plans))

    # -- duplicates, decided up front -------------------------------------------------------------
    def plan(self, batches: list[RawFiles]) -> list[BatchPlan]:
        """Which rows repeat an event_id: earlier in the batch, in an earlier batch or run."""
        seen = self._seen_ids()
        plans = []
        for files in batches:
            cols = ["kafka_topic", "parse_status", "event_id"]
            t = pa.concat_tables([self.lake.read_table(f.path, columns=cols) for _, f in files])
            candidates = (
                ~pc.ends_with(t.column("kafka_topic"), DLQ_SUFFIX).to_numpy(zero_copy_only=False)
                & pc.is_in(t.column("parse_status"), pa.array(["ok", "type_mismatch"])).to_numpy(
                    zero_copy_only=False
                )
                & pc.is_valid(t.column("event_id")).to_numpy(zero_copy_only=False)
            )
            idx = np.flatnonzero(candidates)
            ids = t.column("event_id").take(pa.array(idx))
            firsts = (
                pa.table({"id": ids, "i": pa.array(idx)})
                .group_by("id", use_threads=False)
                .aggregate([("i", "min")])
            )
            first_rows, first_ids = (
                firsts.column("i_min").to_numpy(),
                firsts.column("id").combine_chunks(),
            )
            if len(seen):
                known = pc.is_in(first_ids, value_set=seen).to_numpy(zero_copy_only=False)
                first_rows, first_ids = first_rows[~known], first_ids.filter(pa.array(~known))
            keep = np.zeros(t.num_rows, bool)
            keep[first_rows] = True
            seen = pa.concat_arrays([seen, first_ids])
            plans.append(
                BatchPlan(
                    f"{files[0][0]:010d}-{files[-1][0]:010d}", files, candidates & ~keep, first_ids
                )
            )
        return plans

    def _seen_ids(self) -> pa.Array:
        """Event ids of earlier batches, from the id file each batch leaves in the lake."""
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
        arrays = [self.lake.read_table(p).column("event_id").combine_chunks() for p in paths]
        return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())

    # -- one batch (in a worker process, or here) ---------------------------------------------------
    def process(self, plan: BatchPlan) -> BatchResult:
        """Validate one batch and write its files; returns what to commit and report."""

        # The bulky original bytes are read only for the rows that end in quarantine. Each file
        # with its own columns: one landed before a contract version added fields lacks them.
        paths = [f.path for _, f in plan.files]
        raw = self.conform(
            pa.concat_tables([self._read_light(p) for p in paths], promote_options="default")
        )
        starts = np.cumsum([0] + [f.row_count for _, f in plan.files])
        n = raw.num_rows
        reasons: list[list[str]] = [[] for _ in range(n)]
        rule_ids: list[list[str]] = [[] for _ in range(n)]
        refs = _row_refs(raw)
        result = BatchResult(plan.name, [], n, 0, 0, int(plan.duplicate.sum()))

        def fail(rows, reason, rule_id):
            for i in rows:
                reasons[i].append(reason(i) if callable(reason) else reason)
                rule_ids[i].append(rule_id)
            stat = result.rules.setdefault(rule_id, [0, 0, []])
            stat[1] += len(rows)
            stat[2].extend(refs[i] for i in rows[: SAMPLE_ROWS - len(stat[2])])

        # 1. Rejected by the producer already (reason in the DLQ headers), or undecodable.
        is_dlq = pc.ends_with(raw.column("kafka_topic"), DLQ_SUFFIX).to_numpy(zero_copy_only=False)
        dlq_rows = np.flatnonzero(is_dlq)
        if len(dlq_rows):
            headers = (
                _heavy_rows(self.lake, paths, starts, dlq_rows, ["kafka_headers"])
                .column(0)
                .to_pylist()
            )
            why = {
                int(i): _producer_reason({e["key"]: e["value"] for e in hs or []})
                for i, hs in zip(dlq_rows, headers, strict=True)
            }
            fail(dlq_rows, lambda i: "producer:" + why[int(i)], "producer_contract_check")
        # 2. Duplicates (decided in the plan).
        fail(np.flatnonzero(plan.duplicate), "duplicate_event_id", "event_id_unique")

        # 3. The producer's contract check on everything else, the suite on what passes it.
        rest = np.flatnonzero(~is_dlq & ~plan.duplicate)
        values = (
            _heavy_rows(self.lake, paths, starts, rest, ["kafka_value"]).column(0).to_pylist()
            if len(rest)
            else []
        )
        verdict = self.judge(raw, values, rest, f"{self.run_id}/{plan.name}")
        for (reason, rule_id), rows in verdict.failures.items():
            fail(np.asarray(rows, np.int64), reason, rule_id)
        for rule_id, n_evaluated in verdict.evaluated.items():
            result.rules.setdefault(rule_id, [0, 0, []])[0] += n_evaluated
        for (reason, rule_id), rows in verdict.warnings.items():
            stat = result.rules.setdefault(rule_id, [0, 0, []])
            stat[1] += len(rows)
            stat[2].extend(refs[i] for i in rows[: SAMPLE_ROWS - len(stat[2])])
            result.warnings_by_reason[reason] += len(rows)
        result.docs = verdict.docs

        # 4. Write both zones, named after the batch.
        bad = np.array([bool(r) for r in reasons], bool)
        valid_rows, quarantine_rows = np.flatnonzero(~bad), np.flatnonzero(bad)
        result.written = self._write_validated(
            plan.name, _rows(raw.select(self._validated_inputs), valid_rows)
        )
        if len(quarantine_rows):
            result.written += self._write_quarantine(
                plan.name,
                _with_heavy(self.lake, raw, paths, starts, quarantine_rows),
                [reasons[i] for i in quarantine_rows],
                [rule_ids[i] for i in quarantine_rows],
            )
        result.valid, result.quarantined = len(valid_rows), len(quarantine_rows)
        for i in quarantine_rows:
            result.quarantined_by_reason.update(reasons[i])
        if result.rows_in != result.valid + result.quarantined:  # pragma: no cover - a bug
            raise QualityError(f"batch {plan.name}: counts do not reconcile")
        from visitshare.processes import peak_rss_mb

        result.pid, result.peak_rss_mb = os.getpid(), peak_rss_mb()
        log.info(
            "validated %s batch %s: %d rows in, %d valid, %d quarantined (%d duplicates)",
            self.dataset, plan.name, n, result.valid, result.quarantined, result.duplicates,
        )  # fmt: skip
        return result

    def judge(self, raw: pa.Table, values: list, rows: np.ndarray, run_name: str) -> Verdict:
        """The contract check (the producer's own) on `rows` of `raw`, whose message values
        are `values` (same order), then the suite through GX on the rows that pass it."""
        from visitshare.quality.frame import build_frame
        from visitshare.quality.gxrun import SuiteRunner, redact

        verdict = Verdict()
        raw = self.conform(raw)
        status = raw.column("parse_status").to_pylist()
        passed = []
        for i, value in zip(rows.tolist(), values, strict=True):
            problems = self.contract_check(value, status[i])
            for key in problems:
                verdict.failures[key].append(i)
            if not problems:
                passed.append(i)
        verdict.evaluated[CONTRACT_RULE] += len(rows)
        if not passed:
            return verdict
        checked = np.asarray(passed, np.int64)
        frame = build_frame(_rows(raw.select(self._frame_inputs), checked), self.contract)
        latest = self.clock.now() + timedelta(seconds=self.settings.future_tolerance_seconds)
        if self._runner is None:
            self._runner = SuiteRunner(self.suite, self.clock)
        outcomes, gx_result = self._runner.run(frame, latest, run_name)
        del frame
        for rule in self.suite.rules:
            outcome = outcomes[rule.rule_id]
            verdict.evaluated[rule.rule_id] += outcome.evaluated
            failing = checked[outcome.failing_rows].tolist()
            if failing:
                target = verdict.failures if rule.severity is Severity.ERROR else verdict.warnings
                target[(rule.reason, rule.rule_id)].extend(failing)
        verdict.docs = redact(gx_result).to_json_dict()
        return verdict

    def _read_light(self, path: str) -> pa.Table:
        """A raw file without its bulky columns, with a column for every field of the
        contract (`conform`)."""
        names = self.lake.read_schema(path).names
        table = self.lake.read_table(path, columns=[c for c in names if c not in HEAVY])
        if set(self.contract.field_names) <= set(names):
            return table
        values = self.lake.read_table(path, columns=["kafka_value"]).column(0)
        return self.conform(table, values)

    def conform(self, table: pa.Table, values: pa.ChunkedArray | None = None) -> pa.Table:
        """`table` with a column for every field of the (latest) contract. Rows landed or
        quarantined before the version that added a field have no column for it: it is
        decoded from their message values (`values`, or the table's `kafka_value`) as landing
        decodes them now, so a field a newer producer sent before the contract reached landing
        is not lost; without the values, the column is null."""
        missing = [f for f in arrow_schema(self.contract) if f.name not in table.column_names]
        if not missing:
            return table
        if values is None and "kafka_value" in table.column_names:
            values = table.column("kafka_value")
        decoded = None
        if values is not None:
            from visitshare.landing.rawfile import Decoder

            decoded, _, _ = Decoder(self.contract).decode(values.combine_chunks())
        for f in missing:
            column = (
                decoded.column(f.name) if decoded is not None else pa.nulls(table.num_rows, f.type)
            )
            table = table.append_column(f.with_nullable(True), column)
        return table

    # -- zones ------------------------------------------------------------------------------
    def _write_validated(self, batch: str, rows: pa.Table) -> list[dict]:
        """Valid rows, one file per municipality × month (the event time's Tokyo month)."""
        if not rows.num_rows:
            return []
        rows = self.conform(rows)
        table = pa.table(
            {
                **{f.name: rows.column(f.name).cast(f.type) for f in arrow_schema(self.contract)},
                "source_topic": rows.column("kafka_topic"),
                "source_partition": rows.column("kafka_partition"),
                "source_offset": rows.column("kafka_offset"),
            }
        ).cast(validated_schema(self.contract))
        month = pc.strftime(table.column(self.contract.event_time), format="%Y-%m")
        keys = pc.binary_join_element_wise(table.column("municipality_code"), month, "/")
        # Stable: within a municipality × month, rows keep their source order.
        order = pc.sort_indices(
            pa.table({"k": keys, "i": pa.array(np.arange(table.num_rows))}),
            [("k", "ascending"), ("i", "ascending")],
        )
        table, keys = table.take(order), keys.take(order).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        out = []
        for start, end in zip(starts, np.r_[starts[1:], len(keys)], strict=True):
            code, ym = keys[start].split("/")
            rel = zones.validated_file(self.dataset, code, ym, batch).as_posix()
            part = table.slice(start, end - start)
            nbytes, digest = self.lake.write_parquet(part, rel)
            out.append(_file("validated", rel, part.num_rows, nbytes, digest, code, ym))
        return out

    def _write_quarantine(self, batch: str, rows: pa.Table, reasons, rule_ids) -> list[dict]:
        table = rows.append_column("reasons", pa.array(reasons, pa.list_(pa.string())))
        table = table.append_column("rules", pa.array(rule_ids, pa.list_(pa.string())))
        rel = zones.quarantine_file(self.dataset, batch).as_posix()
        nbytes, digest = self.lake.write_parquet(
            table, rel, {"zone": "quarantine", "contract": self.contract.id}
        )
        return [_file("quarantine", rel, table.num_rows, nbytes, digest)]

    # -- committing ---------------------------------------------------------------------------
    def _commit(self, plan: BatchPlan, result: BatchResult) -> None:
        """The batch becomes part of the zones: its files, its raw files, its event ids."""
        written = list(result.written)
        if len(plan.first_ids):
            rel = zones.seen_ids_file(self.dataset, plan.name).as_posix()
            nbytes, digest = self.lake.write_parquet(pa.table({"event_id": plan.first_ids}), rel)
            written.append(_file("seen", rel, len(plan.first_ids), nbytes, digest))
        now = self.clock.now()
        this_batch = (curated_files.c.dataset == self.dataset) & (
            curated_files.c.batch == plan.name
        )
        with self.engine.begin() as conn:
            # A rerun of the same batch replaces what it wrote before (same names).
            old = set(conn.execute(sa.select(curated_files.c.path).where(this_batch)).scalars())
            conn.execute(curated_files.delete().where(this_batch))
            conn.execute(
                curated_files.insert(),
                [
                    {
                        **w,
                        "dataset": self.dataset,
                        "batch": plan.name,
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
                        "batch": plan.name,
                        "run_id": self.run_id,
                    }
                    for fid, _ in plan.files
                ],
            )
            conn.execute(
                validation_batches.delete().where(
                    (validation_batches.c.dataset == self.dataset)
                    & (validation_batches.c.batch == plan.name)
                )
            )
            conn.execute(
                validation_batches.insert().values(
                    dataset=self.dataset, batch=plan.name, run_id=self.run_id, rows_in=result.rows_in,
                    valid=result.valid, quarantined=result.quarantined, duplicates=result.duplicates,
                    source_ranges=_source_ranges(plan.files),
                )
            )  # fmt: skip
        for path in old - {w["path"] for w in written}:
            self.lake.remove(path)

    def _record(self, run: ValidationRun) -> None:
        """The run record, in the database and as JSON under var/reports/validation/."""
        with self.engine.begin() as conn:
            conn.execute(
                validation_runs.insert().values(
                    run_id=run.run_id, dataset=run.dataset, kind=run.kind, status=run.status.value,
                    started_at=run.started_at, finished_at=run.finished_at, rows_in=run.rows_in,
                    valid=run.valid, quarantined=run.quarantined, record=json.loads(run.model_dump_json()),
                )
            )  # fmt: skip
        folder = self.settings.reports_dir / "validation" / run.dataset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run.run_id}.json").write_text(run.model_dump_json(indent=2))


# -- worker processes ---------------------------------------------------------------------------
_worker: Validator | None = None


def _init_worker(settings: Settings, dataset: str) -> None:
    global _worker
    _worker = Validator(settings, dataset)


def _process_in_worker(plan: BatchPlan) -> BatchResult:
    assert _worker is not None, "the pool initializer sets it"
    return _worker.process(plan)


# -- helpers ------------------------------------------------------------------------------------
def _add(run: ValidationRun, plan: BatchPlan, result: BatchResult) -> None:
    run.batches.append(plan.name)
    run.rows_in += result.rows_in
    run.valid += result.valid
    run.quarantined += result.quarantined
    run.duplicates += result.duplicates
    for reason, n in result.quarantined_by_reason.items():
        run.quarantined_by_reason[reason] = run.quarantined_by_reason.get(reason, 0) + n
    for reason, n in result.warnings_by_reason.items():
        run.warnings_by_reason[reason] = run.warnings_by_reason.get(reason, 0) + n
    known = {r.rule_id for r in run.rules}
    for rule_id in result.rules.keys() - known:  # the contract check's rules: by what occurred
        run.rules.append(
            RuleResult(
                rule_id=rule_id, expectation="contract check (producer's validator)",
                columns=[], severity=Severity.ERROR.value, reason=reason_of_rule(rule_id),
                source="contract",
            )
        )  # fmt: skip
    for record in run.rules:
        evaluated, failed, samples = result.rules.get(record.rule_id, (0, 0, []))
        record.evaluated += evaluated
        record.failed += failed
        record.sample_rows.extend(samples[: SAMPLE_ROWS - len(record.sample_rows)])
    for topic, parts in _source_ranges(plan.files).items():
        merged = run.source_ranges.setdefault(topic, {})
        for p, (lo, hi) in parts.items():
            old = merged.get(p)
            merged[p] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]


def _producer_reason(headers: dict[str, bytes]) -> str:
    """The reason code our producer wrote into a DLQ record's headers. Anyone can write to a
    DLQ topic: only a known code is reported (a header could carry anything)."""
    code = headers.get("dlq_reason", b"").decode(errors="replace")
    return code if code in REASON_CODES else "unknown"


def _file(zone, path, rows, nbytes, digest, municipality_code=None, month=None) -> dict:
    return {"zone": zone, "path": path, "rows": rows, "bytes": nbytes, "sha256": digest,
            "municipality_code": municipality_code, "month": month}  # fmt: skip


def _heavy_rows(lake: Lake, paths, starts: np.ndarray, rows: np.ndarray, columns) -> pa.Table:
    """Some columns of the given batch rows (ascending), reading only the files they are in."""
    parts = []
    for k, path in enumerate(paths):
        local = rows[(rows >= starts[k]) & (rows < starts[k + 1])] - starts[k]
        if len(local):
            parts.append(lake.read_table(path, columns=list(columns)).take(pa.array(local)))
    return pa.concat_tables(parts, promote_options="default")


def _with_heavy(lake: Lake, raw: pa.Table, paths, starts: np.ndarray, rows: np.ndarray) -> pa.Table:
    """Whole raw rows (light columns from `raw`, bulky ones from the files), in raw column order."""
    light = raw.take(pa.array(rows, pa.int64()))
    heavy = _heavy_rows(lake, paths, starts, rows, HEAVY)
    first = lake.read_schema(paths[0])
    columns = {
        **{c: light.column(c) for c in light.column_names},
        **{c: heavy.column(c) for c in heavy.column_names},
    }
    # The first file's columns in its order, then those only later files (or the contract) have.
    fields = [*first, *(light.schema.field(c) for c in light.column_names if c not in first.names)]
    schema = pa.schema(fields, metadata=first.metadata)
    return pa.Table.from_arrays([columns[f.name] for f in fields], schema=schema)


def _rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The given rows (all of them without a copy)."""
    return table if len(rows) == table.num_rows else table.take(pa.array(rows, pa.int64()))


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


def _source_ranges(files: RawFiles) -> dict[str, dict[str, list[int]]]:
    ranges: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for _, f in files:
        old = ranges[f.topic].get(str(f.partition))
        lo, hi = f.first_offset, f.last_offset
        ranges[f.topic][str(f.partition)] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]
    return dict(ranges)


# -- entry points --------------------------------------------------------------------------------
def validate(settings: Settings, dataset: str) -> ValidationRun:
    """Validate everything landed for `dataset` since the last run.

    Runs of one dataset are serialized (a lock in the project database): two at once (an
    Airflow task and a command, say) would take the same raw files."""
    validator = Validator(settings, dataset)
    with named_lock(validator.engine, f"validate-{validator.dataset}"):
        return validator.run()


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
    lake = lake_for(settings)
    for path in paths:
        lake.remove(path)


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
    lake = lake_for(settings)
    return pa.concat_tables([lake.read_table(p) for p in paths], promote_options="default")

"""Data Docs that render with no network: the stored validation results, with our own templates.

Great Expectations' own Data Docs load Bootstrap, jQuery, bootstrap-table, Font Awesome and
Vega from CDNs, and show an empty page where those cannot be reached (a police network). So
the site under `reports/data_docs` is rendered here instead, from what the project's GX
context (var/gx) stores: the redacted validation results (`gxrun.redact`) and the suites.
The pages are plain HTML with their CSS inline: no script, no font, no link outside the
folder.

    index.html                                              every stored result, newest first
    validations/<suite>/<run name>/<run time>/<batch>.html  one per result (GX's own paths)
    expectations/<suite>.html                               one per suite
    runs.json                                               the index's rows, as JSON

A page shows a result's expectations as they ran (type, columns, parameters, severity) and
the counts of their results (`COUNT_KEYS`), never any other result key: the stored results
hold no failing value, and the pages could not show one if they did.

Rebuilding is incremental: a result's page is rendered once (a stored result never changes),
`runs.json` keeps each result's index row, and the index is rendered from those rows. A
change of the templates (or of `RENDER_VERSION`) renders everything again and first removes
whatever else the folder holds from an earlier site (GX's pages, which reference CDNs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jinja2

from visitshare.clock import Clock
from visitshare.landing.files import write_text_atomic

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
RENDER_VERSION = "1"  # bump when what the pages show changes outside the templates
RUNS = "runs.json"
# What a site of ours or GX's own writes at the top of the folder; a full rebuild removes them.
SITE_ENTRIES = ("index.html", RUNS, "validations", "expectations", "static")
# The only keys of an expectation's result a page shows: counts, never values.
COUNT_KEYS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")
HIDDEN_KWARGS = frozenset({"batch_id", *COLUMN_KWARGS})
NOT_COUNTED = "—"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


@cache
def site_format() -> str:
    """A digest of everything a page's rendering depends on: templates and RENDER_VERSION."""
    h = hashlib.sha256(RENDER_VERSION.encode())
    for path in sorted(TEMPLATES.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


# -- what the pages show -------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _kwargs(kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    """An expectation's parameters (its configuration, from the suite file), as text."""
    out = []
    for key, value in kwargs.items():
        if key in HIDDEN_KWARGS:
            continue
        if isinstance(value, dict) and "pass_through_filter" in value:  # a row condition
            value = value["pass_through_filter"]
        out.append((key, _text(value)))
    return out


def _columns(kwargs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in COLUMN_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, list):
            out += [str(v) for v in value]
        elif value is not None:
            out.append(str(value))
    return out


def _expectation(config: dict[str, Any]) -> dict[str, Any]:
    meta = config.get("meta") or {}
    kwargs = config.get("kwargs") or {}
    return {
        "rule_id": str(meta.get("rule_id", "")),
        "type": str(config.get("type", "")),
        "columns": _columns(kwargs),
        "kwargs": _kwargs(kwargs),
        "severity": str(meta.get("severity", "")),
        "reason": str(meta.get("reason", "")),
        "source": str(meta.get("source", "")),
        "notes": str(meta.get("notes", "")),
    }


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _counts(result: dict[str, Any]) -> dict[str, Any]:
    """The counts of one expectation's result (COUNT_KEYS only), None where not counted."""
    return {
        key: (float(result[key]) if key.endswith("percent") else _count(result[key]))
        if isinstance(result.get(key), int | float) and not isinstance(result.get(key), bool)
        else None
        for key in COUNT_KEYS
    }


def _shown(value: int | float | None, percent: bool = False) -> str:
    if value is None:
        return NOT_COUNTED
    return f"{value:.2f}" if percent else f"{int(value):,}"


def _time_text(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _relative(path: str, root_depth: int) -> str:
    return "../" * root_depth + path


def _href(parts: Iterable[str]) -> str:
    return "/".join(quote(p, safe="") for p in parts)


class DataDocs:
    """The Data Docs site of a GX file context: pages from its stores, in `docs_dir`."""

    def __init__(self, context, docs_dir: Path, lock_file: Path, clock: Clock):
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        self._result_id = ValidationResultIdentifier
        self._suite_id = ExpectationSuiteIdentifier
        self.results = context.validation_results_store.store_backend
        self.suites = context.expectations_store.store_backend
        self.docs_dir = docs_dir
        self.lock_file = lock_file
        self.clock = clock

    # -- paths ------------------------------------------------------------------------------------
    @staticmethod
    def suite_page(name: str) -> str:
        return "expectations/" + _href(name.split(".")) + ".html"

    @staticmethod
    def result_page(key: tuple[str, ...]) -> str:
        return "validations/" + _href(key) + ".html"

    def _file(self, page: str) -> Path:
        return self.docs_dir.joinpath(*(unquote(p) for p in page.split("/")))

    # -- building ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One rebuild at a time (validations of two datasets may finish together)."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def rebuild(self, changed_suites: Iterable[str] = ()) -> Path:
        """Render what is new in the stores (and the suites named), then the index; its path."""
        changed = set(changed_suites)
        with self._locked():
            state = self._state()
            entries: dict[str, dict[str, Any]] = state["results"]
            suites: dict[str, dict[str, Any]] = state["suites"]

            stored = {"/".join(k): tuple(k) for k in self.results.list_keys()}
            for gone in entries.keys() - stored.keys():  # a result removed from the store
                self._file(entries.pop(gone)["page"]).unlink(missing_ok=True)
            for name, key in stored.items():
                entry = entries.get(name)
                if entry is None or not self._file(entry["page"]).exists():
                    entry = self._render_result(key)
                    if entry is not None:
                        entries[name] = entry

            names = {self._suite_id.from_tuple(tuple(k)).name for k in self.suites.list_keys()}
            for gone in suites.keys() - names:
                self._file(suites.pop(gone)["page"]).unlink(missing_ok=True)
            for name in sorted(names):
                info = suites.get(name)
                if name in changed or info is None or not self._file(info["page"]).exists():
                    rendered = self._render_suite(name)
                    if rendered is not None:
                        suites[name] = rendered

            index = self.docs_dir / "index.html"
            write_text_atomic(index, self._index(entries, suites))
            write_text_atomic(
                self.docs_dir / RUNS,
                json.dumps(
                    {"format": site_format(), "suites": suites, "results": entries},
                    ensure_ascii=False,
                    indent=1,
                    sort_keys=True,
                ),
            )
            return index

    def _state(self) -> dict[str, Any]:
        """The rows of the index so far, or nothing (and a clean folder) when the pages were
        rendered otherwise: by another version of the templates, or by GX itself."""
        try:
            state = json.loads((self.docs_dir / RUNS).read_text(encoding="utf-8"))
            if state.get("format") == site_format():
                return {"results": dict(state["results"]), "suites": dict(state["suites"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        for entry in SITE_ENTRIES:
            path = self.docs_dir / entry
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return {"results": {}, "suites": {}}

    def _render_result(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """Render one stored result's page; its row of the index (None: not readable now)."""
        try:
            data = json.loads(self.results.get(key))
            results = data["results"]
        except Exception as exc:  # another process may be writing it: the next rebuild takes it
            log.warning("validation result %s not rendered: %s", "/".join(key), exc)
            return None
        ident = self._result_id.from_tuple(key)
        suite = ident.expectation_suite_identifier.name
        run_time = ident.run_id.run_time
        page = self.result_page(key)
        depth = page.count("/")
        rows = []
        for r in results:
            counts = _counts(r.get("result") or {})
            exception = bool((r.get("exception_info") or {}).get("raised_exception"))
            rows.append(
                {
                    **_expectation(r.get("expectation_config") or {}),
                    "success": bool(r.get("success")),
                    "exception": exception,
                    "counts": counts,
                    "element_count": _shown(counts["element_count"]),
                    "unexpected_count": _shown(counts["unexpected_count"]),
                    "unexpected_percent": _shown(counts["unexpected_percent"], percent=True),
                    "missing_count": _shown(counts["missing_count"])
                    if counts["missing_count"]
                    else "",
                }
            )
        failed = sum(not x["success"] for x in rows)
        meta = data.get("meta") or {}
        element_counts = [x["counts"]["element_count"] for x in rows]
        row_count = _count(meta.get("row_count"))  # stored since the suite runs record it
        if row_count is None:
            row_count = max((n for n in element_counts if n is not None), default=None)
        view = {
            "suite": suite,
            "suite_page": _relative(self.suite_page(suite), depth),
            "suite_version": str(meta.get("suite_version", "")),
            "gx_version": str(meta.get("great_expectations_version", "")),
            "run_name": ident.run_id.run_name,
            "run_time_text": _time_text(run_time),
            "batch": ident.batch_identifier,
            "row_count": _shown(row_count),
            "success": bool(data.get("success")),
            "evaluated": len(rows),
            "successful": len(rows) - failed,
            "failed": failed,
            "rows": rows,
        }
        html = _render("validation.html.j2", v=view, root=_relative("", depth))
        write_text_atomic(self._file(page), html)
        return {
            "suite": suite,
            "run_name": view["run_name"],
            "run_time": run_time.astimezone(dt.UTC).isoformat(),
            "batch": view["batch"],
            "success": view["success"],
            "evaluated": len(rows),
            "failed": failed,
            "rows": row_count,
            "unexpected": sum(x["counts"]["unexpected_count"] or 0 for x in rows),
            "page": page,
        }

    def _render_suite(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.suites.get(self._suite_id(name=name).to_tuple()))
        except Exception as exc:  # pragma: no cover - being written by another process
            log.warning("expectation suite %s not rendered: %s", name, exc)
            return None
        page = self.suite_page(name)
        depth = page.count("/")
        meta = data.get("meta") or {}
        rows = [_expectation(e) for e in data.get("expectations") or []]
        view = {
            "name": name,
            "version": str(meta.get("version", "")),
            "dataset": str(meta.get("dataset", "")),
            "rows": rows,
        }
        write_text_atomic(
            self._file(page), _render("suite.html.j2", s=view, root=_relative("", depth))
        )
        return {"page": page, "expectations": len(rows)}

    def _index(self, entries: dict[str, dict[str, Any]], suites: dict[str, dict[str, Any]]) -> str:
        rows = sorted(entries.values(), key=lambda e: (e["suite"], e["batch"]))
        rows.sort(key=lambda e: (e["run_time"], e["run_name"]), reverse=True)
        shown = [
            {**e, "run_time_text": _time_text(dt.datetime.fromisoformat(e["run_time"]))}
            for e in rows
        ]
        return _render(
            "index.html.j2",
            entries=shown,
            suites=[{"name": n, **suites[n]} for n in sorted(suites)],
            updated=_time_text(self.clock.now()),
            root="",
        )

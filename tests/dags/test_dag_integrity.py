"""Every DAG file in `dags/` is a pure declaration that Airflow loads cleanly.

Each file is imported in a fresh interpreter with the project's Airflow environment, with
network connections, database connections and project data files refused while it imports.
The file must define exactly one DAG named after the file, with tags, docs, retries and an
execution timeout on every task, and Airflow's own loader (DagBag) must report no import
error. None of this needs Airflow's metadata database: the probe runs without one.

The checker tests at the bottom feed it small DAG files written to a temporary folder, so the
checks are known to accept a good DAG and reject bad ones even while `dags/` is empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from visitshare.orchestration.airflow_env import airflow_env, airflow_home
from visitshare.settings import REPO_ROOT, Settings

DAGS_DIR = REPO_ROOT / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
NO_DAG_FILES = pytest.mark.skip(reason=f"no DAG files in {DAGS_DIR} yet")

MARKER = "DAG-PROBE-RESULT "

# Runs in the fresh interpreter: argv[1] is JSON {"target", "mode", "guarded"}. Airflow itself
# is imported before the guards go up (its start-up is not under test); from then on every
# attempt is recorded *and* refused, so a DAG file that swallows the error is still caught.
PROBE = r"""
import json, os, socket, sys, traceback
import importlib.machinery, importlib.util

import sqlalchemy.engine
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG
from airflow.sdk.definitions._internal.contextmanager import DagContext

cfg = json.loads(sys.argv[1])
guarded = cfg["guarded"]
allowed = [sys.prefix, os.environ["AIRFLOW_HOME"]]
attempts = []

def refuse(kind, detail):
    attempts.append(f"{kind} {detail}")
    raise PermissionError(f"{kind} at DAG parse time: {detail}")

def no_socket(self, address, *args, **kwargs):
    refuse("socket.connect", address)

def no_engine(self, *args, **kwargs):
    refuse("Engine.connect", self.url)

def under(path, roots):
    return any(path == root or path.startswith(root + os.sep) for root in roots)

def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.path.abspath(os.fsdecode(args[0]))
        code = path.endswith((".py", ".pyc")) or os.path.basename(path) == ".airflowignore"
        if under(path, guarded) and not under(path, allowed) and not code:
            refuse("open", path)
    elif event == "sqlite3.connect":
        refuse("sqlite3.connect", args[0])

socket.socket.connect = no_socket
socket.socket.connect_ex = no_socket
sqlalchemy.engine.Engine.connect = no_engine
sys.addaudithook(audit)

result = {"attempts": attempts}
target = cfg["target"]
if cfg["mode"] == "file":
    name = "dag_probe_" + os.path.basename(target)[:-3]
    DagContext.current_autoregister_module_name = name
    try:
        loader = importlib.machinery.SourceFileLoader(name, target)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        sys.modules[name] = module
        loader.exec_module(module)
    except BaseException:
        result["import_error"] = traceback.format_exc(limit=-4)
    else:
        # Like Airflow's importer: DAGs bound to module globals plus those auto-registered
        # by calling a @dag function or leaving a `with DAG(...)` block.
        found = {id(o): o for o in vars(module).values() if isinstance(o, DAG)}
        found.update({id(d): d for d, m in DagContext.autoregistered_dags if m is module})
        result["dags"] = [
            {
                "dag_id": d.dag_id,
                "tags": sorted(d.tags or []),
                "doc_md": d.doc_md or "",
                "tasks": [
                    {
                        "task_id": t.task_id,
                        "retries": t.retries,
                        "execution_timeout": t.execution_timeout and str(t.execution_timeout),
                    }
                    for t in d.tasks
                ],
            }
            for d in found.values()
        ]
    DagContext.autoregistered_dags.clear()
    DagContext.current_autoregister_module_name = None

# Airflow's own loader, as the DAG processor would run it (safe_mode off: every .py counts).
bag = DagBag(dag_folder=target, safe_mode=False)
result["dagbag"] = {"dag_ids": sorted(bag.dag_ids), "import_errors": bag.import_errors}
print("MARKER" + json.dumps(result), flush=True)
""".replace("MARKER", MARKER)


def probe(settings: Settings, target: Path, mode: str = "file") -> dict:
    """Import `target` (a DAG file, or with mode="folder" a DAG folder) in a fresh process."""
    env = airflow_env(settings)  # AIRFLOW_HOME is under settings.var, a tmp dir in tests
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(target if mode == "folder" else target.parent)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in dags/
    env["AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACK_DEPTH"] = "6"  # reach the DAG file's line
    # Where project data lives: the repo (contracts, infra, ...) and the local state dir.
    guarded = sorted({str(REPO_ROOT), str(settings.var), str(settings.lake)})
    config = json.dumps({"target": str(target), "mode": mode, "guarded": guarded})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, config],
        env=env,
        cwd=REPO_ROOT,  # relative paths in a DAG file resolve into the repo, and are caught
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    output = (done.stdout + done.stderr)[-3000:]
    pytest.fail(f"the probe for {target} died (exit {done.returncode}):\n{output}")


def dag_file_problems(summary: dict, path: Path) -> list[str]:
    """What is wrong with the DAG file `path`, from its probe summary (empty: nothing)."""
    # dict.fromkeys: the same attempt repeats when DagBag imports the file a second time.
    problems = [f"parse-time I/O attempted: {a}" for a in dict.fromkeys(summary["attempts"])]
    if "import_error" in summary:
        problems.append(f"import failed:\n{summary['import_error']}")
    else:
        dags = summary["dags"]
        if len(dags) != 1:
            ids = [d["dag_id"] for d in dags]
            problems.append(f"defines {len(dags)} DAGs {ids}, expected exactly one")
        for dag in dags:
            if dag["dag_id"] != path.stem:
                problems.append(f"dag_id {dag['dag_id']!r} differs from file stem {path.stem!r}")
            if not dag["tags"]:
                problems.append(f"DAG {dag['dag_id']!r} has no tags")
            if not dag["doc_md"].strip():
                problems.append(f"DAG {dag['dag_id']!r} has no doc_md (use doc_md=__doc__)")
            for t in dag["tasks"]:
                if (t["retries"] or 0) < 1:
                    problems.append(f"task {t['task_id']!r} has retries={t['retries']}, want >= 1")
                if not t["execution_timeout"]:
                    problems.append(f"task {t['task_id']!r} has no execution_timeout")
    problems += [
        f"DagBag import error in {f}:\n{e}" for f, e in summary["dagbag"]["import_errors"].items()
    ]
    if summary["dagbag"]["dag_ids"] != [path.stem]:
        problems.append(f"DagBag loaded {summary['dagbag']['dag_ids']}, expected [{path.stem!r}]")
    return problems


# --- the project's DAG files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "dag_file",
    [pytest.param(p, id=p.name) for p in DAG_FILES] or [pytest.param(None, marks=NO_DAG_FILES)],
)
def test_dag_file(settings: Settings, dag_file: Path) -> None:
    problems = dag_file_problems(probe(settings, dag_file), dag_file)
    assert not problems, f"{dag_file.name}:\n" + "\n".join(problems)


@pytest.mark.skipif(not DAG_FILES, reason=f"no DAG files in {DAGS_DIR} yet")
def test_dag_folder_loads_without_import_errors(settings: Settings) -> None:
    summary = probe(settings, DAGS_DIR, mode="folder")
    assert summary["attempts"] == []
    assert summary["dagbag"]["import_errors"] == {}
    assert summary["dagbag"]["dag_ids"] == sorted(p.stem for p in DAG_FILES)


# --- the checker itself -----------------------------------------------------------------------

EXAMPLE_DAG = '''
"""A tiny example DAG: one task that marks an asset updated."""

from datetime import timedelta

from airflow.sdk import Asset, Metadata, dag, task

PRELUDE

example = Asset("visitshare://example/DAG_ID")


@dag(
    schedule=None,
    doc_md=__doc__,
    tags=["example"],
    default_args={"retries": RETRIES, "execution_timeout": timedelta(minutes=5)},
)
def DAG_ID():
    @task(outlets=[example])
    def produce():
        yield Metadata(example, {"n": 1})
        return 1

    produce()


DAG_ID()
'''


def write_dag(folder: Path, dag_id: str, *, prelude: str = "", retries: int = 1) -> Path:
    path = folder / f"{dag_id}.py"
    source = EXAMPLE_DAG.replace("PRELUDE", textwrap.dedent(prelude).strip())
    path.write_text(source.replace("DAG_ID", dag_id).replace("RETRIES", str(retries)))
    return path


def test_checker_accepts_a_good_dag_without_any_database(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "dags").mkdir()
    path = write_dag(tmp_path / "dags", "good_example")
    summary = probe(settings, path)
    assert dag_file_problems(summary, path) == []
    assert summary["dags"][0]["tasks"] == [
        {"task_id": "produce", "retries": 1, "execution_timeout": "0:05:00"}
    ]
    # The probe never needed Airflow's metadata database: none was created.
    assert not (airflow_home(settings) / "airflow.db").exists()


BAD_DAGS = {
    "opens_a_socket": (
        {"prelude": 'import socket\nsocket.create_connection(("127.0.0.1", 9), timeout=1)'},
        ["parse-time I/O attempted: socket.connect ('127.0.0.1', 9)", "import failed"],
    ),
    "swallows_a_refused_socket": (
        {
            "prelude": """
                import contextlib, socket
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", 9), timeout=1)
            """
        },
        ["parse-time I/O attempted: socket.connect"],
    ),
    "queries_a_database": (
        {
            "prelude": """
                import sqlalchemy as sa
                sa.create_engine("sqlite:////tmp/never-created.db").connect()
            """
        },
        ["parse-time I/O attempted: Engine.connect sqlite:////tmp/never-created.db"],
    ),
    "reads_a_project_file": (
        {"prelude": 'open("pyproject.toml").read()'},
        [f"parse-time I/O attempted: open {REPO_ROOT / 'pyproject.toml'}"],
    ),
    "has_no_retries": (
        {"retries": 0},
        ["task 'produce' has retries=0, want >= 1"],
    ),
}


@pytest.mark.parametrize("dag_id", sorted(BAD_DAGS))
def test_checker_rejects_a_bad_dag(settings: Settings, tmp_path: Path, dag_id: str) -> None:
    options, expected = BAD_DAGS[dag_id]
    (tmp_path / "dags").mkdir()
    path = write_dag(tmp_path / "dags", dag_id, **options)
    report = "\n".join(dag_file_problems(probe(settings, path), path))
    for fragment in expected:
        assert fragment in report


def test_checker_rejects_a_misnamed_dag_and_reports_folder_import_errors(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    good = write_dag(folder, "good_example")
    misnamed = good.rename(folder / "other_name.py")
    (folder / "broken.py").write_text("from airflow.sdk import dag\nthis is not python\n")
    report = "\n".join(dag_file_problems(probe(settings, misnamed), misnamed))
    assert "dag_id 'good_example' differs from file stem 'other_name'" in report

    summary = probe(settings, folder, mode="folder")
    assert summary["dagbag"]["dag_ids"] == ["good_example"]
    assert list(summary["dagbag"]["import_errors"]) == [str(folder / "broken.py")]

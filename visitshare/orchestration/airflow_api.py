"""A small client of Airflow's REST API (v2), for what `make run` asks of Airflow.

We never read Airflow's metadata database: its schema is Airflow's own business and changes
between versions; the public API is the contract. The embedded stack uses the simple auth
manager, whose generated admin password lives under AIRFLOW_HOME; a JWT is fetched once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from visitshare.orchestration.airflow_env import API_HOST, airflow_home
from visitshare.orchestration.errors import ApiUnreachable, PipelineError
from visitshare.settings import Settings

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
ADMIN = "admin"


READ_ATTEMPTS = 3


def _timed_out(exc: OSError) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, TimeoutError) or "timed out" in str(reason)


class AirflowAPI:
    def __init__(self, settings: Settings, timeout_s: float = 10.0):
        self.base = f"http://{API_HOST}:{settings.airflow_api_port}"
        self.home = airflow_home(settings)
        self.timeout_s = timeout_s
        self._token: str | None = None

    # -- transport ------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        # Our own loopback http URL, never one from input.
        # A read (GET, or a POST that lists) is asked again when the API server is slow to
        # answer: on a loaded machine (two cores, Airflow's own task processes starting) a
        # loopback request can time out once without anything being wrong.
        reads = method == "GET" or path.endswith("/list")
        attempts = READ_ATTEMPTS if reads else 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.base + path, data, headers, method=method)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    payload = response.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode(errors="replace")
                raise PipelineError(f"Airflow API {method} {path}: {exc.code} {detail}") from None
            except OSError as exc:
                if attempt < attempts and _timed_out(exc):
                    continue
                raise ApiUnreachable(f"Airflow API {method} {path} unreachable: {exc}") from None
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            try:
                passwords = json.loads((self.home / PASSWORDS_FILE).read_text())
            except (OSError, ValueError) as exc:
                raise PipelineError(
                    f"no Airflow admin password yet ({self.home / PASSWORDS_FILE}): {exc}"
                ) from None
            answer = self._request(
                "POST",
                "/auth/token",
                {"username": ADMIN, "password": passwords[ADMIN]},
                auth=False,
            )
            self._token = answer["access_token"]
        return self._token

    # -- what we ask ------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            self._request("GET", "/api/v2/monitor/health", auth=False)
        except PipelineError:
            return False
        return True

    def dag_exists(self, dag_id: str) -> bool:
        try:
            self._request("GET", f"/api/v2/dags/{dag_id}")
        except PipelineError as exc:
            if ": 404 " in str(exc):
                return False
            raise
        return True

    def trigger(self, dag_id: str) -> str:
        """Start a run of `dag_id` now; its run id."""
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        return run["dag_run_id"]

    def dag_runs(self, dag_ids: list[str], since: datetime) -> list[dict[str, Any]]:
        """Runs of these DAGs whose run_after is at or after `since`, oldest first."""
        body = {"dag_ids": dag_ids, "run_after_gte": since, "order_by": "run_after"}
        return self._request("POST", "/api/v2/dags/~/dagRuns/list", body)["dag_runs"]

    def failed_tasks(self, dag_ids: list[str], since: datetime) -> list[dict[str, Any]]:
        body = {"dag_ids": dag_ids, "state": ["failed"], "run_after_gte": since}
        answer = self._request("POST", "/api/v2/dags/~/dagRuns/~/taskInstances/list", body)
        return answer["task_instances"]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to Airflow")

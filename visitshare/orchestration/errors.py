"""Errors of orchestration."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class PipelineError(VisitShareError):
    """The pipeline did not finish under Airflow (a failed task, or a timeout)."""


class ApiUnreachable(PipelineError):
    """Airflow's API server did not answer in time (busy, or not up): ask again later."""

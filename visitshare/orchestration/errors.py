"""Errors of orchestration."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class PipelineError(VisitShareError):
    """The pipeline did not finish under Airflow (a failed task, or a timeout)."""

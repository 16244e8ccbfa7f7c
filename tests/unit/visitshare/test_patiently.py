"""`make run` asks Airflow's API again while it is too busy to answer, until its deadline."""

from __future__ import annotations

import time

import pytest

from visitshare.orchestration.errors import ApiUnreachable, PipelineError
from visitshare.orchestration.run import patiently


def _flaky(failures: int, error: Exception):
    calls = []

    def ask() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "answer"

    return ask, calls


def test_a_busy_api_is_asked_again_until_it_answers():
    ask, calls = _flaky(3, ApiUnreachable("timed out"))
    assert patiently(ask, time.monotonic() + 60, every_s=0) == "answer"
    assert len(calls) == 4


def test_past_the_deadline_the_last_error_is_raised():
    ask, calls = _flaky(10, ApiUnreachable("timed out"))
    with pytest.raises(ApiUnreachable):
        patiently(ask, time.monotonic() - 1, every_s=0)
    assert len(calls) == 1


def test_other_errors_are_not_asked_again():
    ask, calls = _flaky(1, PipelineError("404 no such DAG"))
    with pytest.raises(PipelineError):
        patiently(ask, time.monotonic() + 60, every_s=0)
    assert len(calls) == 1

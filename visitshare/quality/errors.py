"""Errors of the quality stage, importable without loading Great Expectations."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class SuiteError(VisitShareError, ValueError):
    """A suite file that cannot be used; the message names the file and the rule."""


class QualityError(VisitShareError):
    """The suite could not be evaluated (e.g. an expectation raised); nothing was written."""

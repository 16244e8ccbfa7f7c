"""Errors of landing."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class LandingError(VisitShareError):
    """Landing stopped; the message says why and what was committed (the manifest is consistent)."""


class ManifestConflict(LandingError):
    """A file does not continue its partition's landed range (another lander got there first)."""

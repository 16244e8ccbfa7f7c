"""Errors of the release stage."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class ReleaseError(VisitShareError):
    """A release cannot be made or read; nothing was published."""


class DisclosureError(VisitShareError):
    """The data cannot be made shareable (e.g. a field has no disclosure rule); nothing is published."""


class PseudonymKeyError(VisitShareError):
    """No usable pseudonym key; nothing is published."""

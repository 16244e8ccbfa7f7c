"""Errors of partner access."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class PartnerError(VisitShareError, ValueError):
    """An unknown partner, or a partners file that cannot be used."""

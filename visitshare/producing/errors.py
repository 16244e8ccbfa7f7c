"""Errors of the Kafka side: the embedded broker."""

from __future__ import annotations

from visitshare.errors import VisitShareError


class BrokerError(VisitShareError):
    """The embedded broker cannot be started, reached or stopped; the message says why."""

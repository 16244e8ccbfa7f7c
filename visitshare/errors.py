"""The one exception base class: every error a person can act on derives from it.

The command line catches `VisitShareError` once and prints its message as one line (exit 1),
so a new error class needs no edit anywhere else to be reported cleanly. Each stage keeps its
own subclasses in its package's `errors.py` (or beside its model, for the contracts).
"""

from __future__ import annotations


class VisitShareError(Exception):
    """A problem with input, configuration or state that the message explains."""


class UserError(VisitShareError):
    """A problem the user can fix; printed as one line, exit code 1."""

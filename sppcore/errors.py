"""Error types for bad user input (no torch).

Anything that is the user's to fix (a missing file, a malformed annotation, an unknown
config key) raises a subclass of :class:`UserError` with a one-line message naming the
file and the problem; the tools turn it into that line on stderr and exit code 2.
"""
from __future__ import annotations

__all__ = ["UserError", "DatasetError", "ProposalError"]


class UserError(Exception):
    """Bad input from the user (a file, a flag, a dataset): reported in one line, exit 2."""


class DatasetError(UserError):
    """A dataset file is missing, unreadable or malformed."""


class ProposalError(UserError):
    """An image cannot be turned into proposals (empty, unreadable, wrong type)."""

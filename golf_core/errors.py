"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Anything a user can cause (a bad stack file, a missing shard, an artifact over budget) raises
:class:`GolfError` with a message that names the file, key or value and says how to fix it.
Anything else is a bug in golf and keeps its traceback.
"""

from __future__ import annotations


class GolfError(Exception):
    """A user-facing error: ``str(err)`` is a complete one-line explanation."""

    exit_code: int = 2


class BudgetError(GolfError):
    """The artifact is over the byte budget: the report is still written, the run exits 1."""

    exit_code = 1


def did_you_mean(name: str, choices) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""

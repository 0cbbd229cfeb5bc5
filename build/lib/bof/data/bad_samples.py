"""Bad input: one error type that names the file and the problem, and the ``data.on_bad_sample`` policy.

``error`` (default) stops with that message. ``skip`` logs one warning per file, leaves the sample out
(at load time) or replaces it by the next good one (a corrupt image found while training), and counts:
the count is reported after every epoch and in metrics.json.
"""

from __future__ import annotations

POLICIES = ("error", "skip")


class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the file and the problem."""


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got {policy!r}")
    return policy


def substitute_index(index: int, attempt: int, size: int) -> int:
    """The sample tried instead of ``index`` on the ``attempt``-th failure (the next ones, in order)."""
    return (index + attempt) % size

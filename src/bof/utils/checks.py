"""One rule per config key, kept in the constructor that takes the key (or in its class's ``check``, for
what is too costly to build at start-up): :func:`require` raises a ValueError that names the full key and
what its value must be. Start-up (``bof.engine.run_setup.build_tricks``) builds or checks every group
once, before any data is read, so that message is what a wrong value gets."""

from __future__ import annotations

import math
from collections.abc import Callable


def is_number(value, finite: bool = False) -> bool:
    """A JSON number: an int or float, not a bool (JSON's true is no number, Python's True is 1);
    ``finite``: neither inf nor NaN. What a config value, a metrics.json entry or a detection's score
    must be before it is compared or scored."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) or not finite


def whole(value: float) -> bool:
    """A whole number (inf and NaN are not)."""
    return float(value).is_integer()


def count(value: float) -> bool:
    """A whole number >= 0 (epochs, iterations)."""
    return value >= 0 and whole(value)


def fraction(value: float) -> bool:
    """In [0, 1] (a probability, a share)."""
    return 0 <= value <= 1


def positive(value: float) -> bool:
    return value > 0


def nonnegative(value: float) -> bool:
    return value >= 0


def require(key: str, value, ok: Callable[[float], bool], expected: str, optional: bool = False) -> None:
    """``value`` of config key ``key`` is a number (not a bool) for which ``ok`` holds; ``optional``: None
    is allowed too (a default left to the code)."""
    if value is None and optional:
        return
    if not is_number(value) or not ok(value):
        raise ValueError(f"{key}={value!r}: must be {expected}")

"""The ``key=value`` command lines of bof-eval and bof-predict: their own keys, and overrides of the
run's stored config (the dotted keys bof-train takes, e.g. ``data.root=/data/VOCdevkit``; applied by
:func:`bof.utils.stored_config.with_overrides`, which names a key the stored config lacks)."""

from __future__ import annotations

import logging
import sys


def parse_key_values(argv: list[str], own: dict[str, object], usage: str) -> tuple[dict, list[str]]:
    """-> (the command's own keys, defaults filled in; the remaining ``key=value`` overrides). A key of
    ``own`` whose default is ``...`` is required. ``--help`` prints ``usage`` and exits."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage)
        raise SystemExit(0)
    values, overrides = dict(own), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"{arg!r}: arguments are key=value\n\n{usage}")
        if key in own:
            values[key] = value
        else:
            overrides.append(arg)
    missing = [key for key, value in values.items() if value is ...]
    if missing:
        raise SystemExit(f"missing {', '.join(f'{k}=...' for k in missing)}\n\n{usage}")
    return values, overrides


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", stream=sys.stderr
    )

"""Leaf module: atomic file writes. The content goes to a temporary file in the target's folder, is
flushed to disk, then renamed over the target, so a crash, a kill or a full disk at any moment leaves
either the old file or the new one, never a partial one (the temporary file is removed on an error).
An OSError names the file and says why (a full disk, a folder that is not writable): the bare ENOSPC
of a write names nothing."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


class WriteError(OSError):
    """An OSError that names what could not be written and why (its ``errno`` is the original's)."""


FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(path: str | os.PathLike, error: OSError, what: str = "") -> OSError:
    """``error`` (raised writing ``path``) as a :class:`WriteError` naming ``path`` and the fix; one that
    already is one is returned as it is (it names the more precise path)."""
    if isinstance(error, WriteError):
        return error
    if error.errno in FULL:
        why = f"the disk is full ({errno.errorcode[error.errno]}): free space there, or write elsewhere"
    elif error.errno in NOT_WRITABLE:
        why = f"it is not writable ({error.strerror}): fix its permissions, or write elsewhere"
    else:
        why = f"{type(error).__name__}: {error.strerror or error}"
    return WriteError(error.errno, f"could not write {what}{path}: {why}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """An OSError raised in the block is re-raised by :func:`write_error` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise write_error(path, error, what) from error


def naming(path: str | os.PathLike, what: str = ""):
    """A decorator: the function's OSErrors name ``path`` (:func:`writing`)."""

    def wrap(function):
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            with writing(path, what):
                return function(*args, **kwargs)

        return wrapped

    return wrap


class Sink:
    """A binary file that keeps the OSError its ``write`` raised: a writer (torch.save's zip writer) may
    replace it by an error that says nothing of the disk."""

    def __init__(self, file: IO[bytes]):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(file)`` on a temporary binary file, then renames it to ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = Sink(f)
                try:
                    write(sink)
                except Exception as error:
                    if sink.error is None or sink.error is error:
                        raise
                    raise sink.error from error  # the OSError torch.save turned into a RuntimeError
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda f: f.write(text.encode()))


def write_json_atomically(path: str | os.PathLike, data) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer that takes a file name (an exporter):
    renamed to ``path`` when the block ends, removed if it raises, so ``path`` is never half written."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    try:
        with writing(path):
            yield Path(tmp)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

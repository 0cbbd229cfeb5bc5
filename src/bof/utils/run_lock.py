"""Leaf module: one owner per run directory. The main process of a job holds an exclusive advisory lock
(``flock``) on ``<run dir>/.bof.lock`` from before it touches the directory until the job ends. The kernel
drops the lock with the process however it ends (kill -9 included), so there is never a stale lock to
delete. A second process into a live run directory (a dry run, a resume, a sweep rerun while that row
trains) stops with :class:`RunDirBusy` naming the holder, instead of deleting the live run's temporary
checkpoint or mixing two configs' files. Where the filesystem has no ``flock`` (some NFS mounts), the job
warns once and runs unlocked."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

log = logging.getLogger(__name__)
LOCK_FILE = ".bof.lock"
_held: set[int] = set()  # this process's lock descriptors
_warned = False


class RunDirBusy(RuntimeError):
    """Another live process owns the run directory."""


@contextmanager
def own_run_dir(out_dir: Path) -> Iterator[bool]:
    """Creates ``out_dir`` and holds its lock for the block (-> True; False where it cannot be locked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(fd, out_dir)
        if locked:
            _held.add(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield locked
    finally:
        if fd in _held:
            _held.discard(fd)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)  # also for the forked children's copies of the descriptor
        os.close(fd)


def _lock(fd: int, out_dir: Path) -> bool:
    global _warned
    try:
        if fcntl is None:
            raise OSError(errno.ENOSYS, "no fcntl.flock on this system")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        raise RunDirBusy(busy_message(out_dir, os.pread(fd, 200, 0).decode(errors="replace"))) from None
    except OSError as error:  # ENOLCK (NFS without a lock manager), ENOSYS, EINVAL (some FUSE mounts)
        if not _warned:
            _warned = True
            log.warning(
                "cannot lock %s (%s): running without the lock, so nothing stops a second bof-train from "
                "writing into the same run directory at the same time",
                out_dir / LOCK_FILE,
                error,
            )
        return False


def busy_message(out_dir: Path, holder: str) -> str:
    pid, _, host = holder.strip().partition(" ")
    who = f"PID {pid} on {host}" if pid else "a process that is still starting"
    return (
        f"{out_dir} is in use by another bof process ({who}, holding {out_dir / LOCK_FILE}): it may be a "
        "live run, whose temporary checkpoint and files this one would change, so this one stops here (Hydra "
        "has already written this command's config into its .hydra/; the run's own is in its checkpoints). "
        "Wait for that process to end (the lock goes with it: there is no file to delete), or write this "
        "run elsewhere (hydra.run.dir=<dir>, or hydra.sweep.dir=<dir> for a sweep)"
    )


def _close_in_child() -> None:
    """A forked child (a data loader worker) closes its copies of the lock descriptors, so that the lock
    ends with the process that owns the run, not with the last of its workers."""
    for fd in _held:
        os.close(fd)  # never flock(LOCK_UN) here: that would unlock the parent's lock
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)

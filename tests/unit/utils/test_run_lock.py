"""One owner per run directory: a second process gets an error naming the holder's PID, the lock ends with
its block however the block ends and with its process however the process ends (its forked workers
alive), and a filesystem without flock runs unlocked after one warning."""

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bof.utils import run_lock
from bof.utils.run_lock import LOCK_FILE, RunDirBusy, own_run_dir


def holder(run_dir, body: str, *args: str) -> subprocess.Popen:
    """A Python process (arguments ``args``) that takes ``run_dir``'s lock, prints a line, then runs
    ``body``."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from bof.utils.run_lock import own_run_dir
        with own_run_dir(Path({str(run_dir)!r})):
            print("held", flush=True)
    """) + textwrap.indent(textwrap.dedent(body), "    ")
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_gets_an_error_naming_the_holders_pid_until_the_holder_ends(tmp_path):
    process = holder(tmp_path / "run", "sys.stdin.read()")  # holds until its stdin closes
    try:
        with pytest.raises(
            RunDirBusy, match=rf"run is in use by another bof process \(PID {process.pid} on "
        ):
            with own_run_dir(tmp_path / "run"):
                pass
    finally:
        process.communicate(timeout=30)
    with own_run_dir(tmp_path / "run") as locked:  # the holder is gone: free, no file to delete
        assert locked and (tmp_path / "run" / LOCK_FILE).read_text().startswith(f"{os.getpid()} ")


def test_the_lock_ends_with_its_block_also_when_the_block_raises(tmp_path):
    with own_run_dir(tmp_path):
        with pytest.raises(RunDirBusy):  # a lock of this process's own is as exclusive as another's
            with own_run_dir(tmp_path):
                pass
    with pytest.raises(ValueError), own_run_dir(tmp_path):
        raise ValueError("the job failed")
    with own_run_dir(tmp_path) as locked:
        assert locked


def test_a_killed_owner_frees_the_directory_though_its_forked_workers_live_on(tmp_path):
    process = holder(
        tmp_path,
        """
        worker = os.fork()
        if worker == 0:  # a data loader worker, forked while the lock is held
            Path(sys.argv[1]).touch()
            time.sleep(60)
            os._exit(0)
        while not Path(sys.argv[1]).exists():
            time.sleep(0.01)
        print(worker, flush=True)
        os.kill(os.getpid(), 9)
        """,
        str(tmp_path / "worker-started"),
    )
    worker = int(process.stdout.readline())
    try:
        process.wait(timeout=30)
        with own_run_dir(tmp_path) as locked:
            assert locked
    finally:
        os.kill(worker, signal.SIGKILL)
        process.communicate(timeout=30)


def test_a_filesystem_without_flock_warns_once_and_runs_unlocked(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    monkeypatch.setattr(run_lock, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="bof"):
        for _ in range(2):
            with own_run_dir(tmp_path) as locked:
                assert not locked
    assert caplog.text.count("running without the lock") == 1 and "No locks available" in caplog.text

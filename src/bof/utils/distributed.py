"""Data-parallel processes on existing engines: torch.distributed (NCCL on GPUs, gloo on CPU).

Four ways in, one code path (:func:`setup` reads the standard environment variables):

* ``trainer.devices=N`` on one node: the Hydra job calls :func:`spawn`, which starts N processes with
  ``torch.multiprocessing.start_processes`` and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* for them.
* ``torchrun`` (one node or several): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are
  already set; the same code joins that group.
* SLURM tasks (``srun -n 8 bof-train ...``, and hydra-submitit-launcher, which runs its tasks with srun):
  :func:`slurm_environment` takes rank, local rank and world size from SLURM's variables when this
  process is one of several tasks of the job step, the master from the step's first node (MASTER_ADDR
  and MASTER_PORT are kept when a prolog set them; the port is derived from the job id otherwise).

Only rank 0 writes files; other ranks log warnings and errors only. Collectives time out after
``trainer.collective_timeout_min`` minutes, so a rank left alone by a failed peer does not wait half an
hour (torch's default); a failing rank tears its group down (:func:`cleanup`).

A stop signal (SIGTERM, SIGUSR1) to any of these processes stops every rank after the same epoch
(:func:`any_rank` at each epoch's end, in :mod:`bof.engine.epochs`); :func:`spawn`'s parent passes the
ones it receives on to its processes and waits for them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # a scheduler stopping the job; SLURM's --signal


class Stopped(SystemExit):
    """A run that a stop signal ended after an epoch's checkpoint; its message names the epoch. Exit
    status 1: the run is not finished, so ``afterok`` dependencies and ``set -e`` scripts must not take it
    for one; ``trainer.resume=true`` continues it. Under :func:`spawn` the parent raises it again once
    every rank has stopped: one line, no traceback."""


def launched_externally() -> bool:
    """True under torchrun (or anything that set RANK / WORLD_SIZE) or as one of several SLURM tasks."""
    return "RANK" in os.environ or slurm_environment() is not None


def slurm_environment(env=os.environ) -> dict | None:
    """RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT for one task of a
    multi-task SLURM job step (``srun``), or None. Only a job step's tasks count: the batch script of
    ``sbatch -n 8`` (or a shell of ``salloc``) is one process whatever SLURM_NTASKS says, so
    ``bof-train trainer.devices=8`` there spawns its own processes. MASTER_ADDR / MASTER_PORT already
    set (a prolog's) are kept."""
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return None
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(tasks)
    return {
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": str(tasks),
        "LOCAL_WORLD_SIZE": re.match(r"\d+", per_node).group(),  # "8(x2)": 8 tasks on each of 2 nodes
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes or "127.0.0.1"),
        "MASTER_PORT": env.get("MASTER_PORT") or str(15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    }


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03`` (what ``scontrol show
    hostnames`` prints first, without needing scontrol on the compute node)."""
    prefix, ranges = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip()).groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def setup(device_type: str, timeout_minutes: float = 10.0) -> tuple[int, int, int]:
    """Joins the process group the environment describes; -> (rank, world_size, local_rank).

    One process and no environment: (0, 1, 0) and no group. Idempotent. On CUDA each rank takes
    ``cuda:(local_rank % visible GPUs)``: a cluster that shows each task only its own GPU gives it
    ``cuda:0``."""
    if "RANK" not in os.environ and (slurm := slurm_environment()) is not None:
        os.environ.update(slurm)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=timeout_minutes)
        )  # env:// rendezvous
    if rank != 0:  # other ranks: warnings and errors only
        logging.getLogger("bof").setLevel(logging.WARNING)
    return rank, world_size, local_rank


def from_rank0(obj):
    """Rank 0's ``obj`` on every rank (a decision all ranks must share: resume, finished); ``obj``
    without a process group."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (one all-reduce of one number): a decision every
    rank must share whichever of them saw its cause; ``flag`` without a process group."""
    if not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all ranks (one all-reduce); NaN or inf on any rank reaches all of them."""
    if not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...]; [obj] without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_objects(obj) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None on the others; [obj] without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it writes a cache), the other ranks once it has finished (they read
    it). A block that raises on rank 0 skips the barrier: its group is torn down and the peers fail."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def check_local_gpus(device: str, nprocs: int) -> None:
    """``trainer.devices=N`` starts one process per GPU: on CUDA, N GPUs must be visible. Fails before
    starting any process, naming what to pass (the sweeps' default is the paper's 8, or 4 GPUs)."""
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_cuda and nprocs > torch.cuda.device_count():
        raise ValueError(
            f"trainer.devices={nprocs} starts one process per GPU, but {torch.cuda.device_count()} GPU(s) "
            f"are visible here: pass trainer.devices={torch.cuda.device_count()} (the global batch stays the "
            "paper's; the run warns that its per-GPU batch differs), or run on a node with more GPUs"
        )


def spawn(fn: Callable, nprocs: int, *args) -> None:
    """Runs ``fn(*args)`` in ``nprocs`` new local processes that form one process group.

    A stop signal to this process (a scheduler's, ``timeout``'s, ``docker stop``'s) is passed on to the
    processes, and this one waits for them: they stop after the same epoch's checkpoint, and this process
    then raises :class:`Stopped` with their message. The processes start with the stop signals blocked
    (their handlers come with the run, :class:`bof.engine.epochs.StopSignal`), so that one arriving while
    they import and build is held until then rather than killing them."""
    port = free_port()
    log.info("starting %d processes (torch.distributed, MASTER_PORT=%d)", nprocs, port)
    stops = torch.multiprocessing.get_context("spawn").SimpleQueue()  # rank 0's Stopped message
    processes, received = [], []

    def pass_on(signum: int) -> None:
        for process in processes:
            if process.exitcode is None:  # not yet ended (and reaped: its pid is still its own)
                os.kill(process.pid, signum)

    def forward(signum, frame) -> None:
        received.append(signum)
        log.warning("received %s: passed on to the processes", signal.Signals(signum).name)
        pass_on(signum)

    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the processes inherit the mask
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS} if in_main_thread else {}
    try:
        context = torch.multiprocessing.start_processes(
            _process_entry,
            args=(fn, nprocs, port, stops, args),
            nprocs=nprocs,
            join=False,
            start_method="spawn",
        )
        processes.extend(context.processes)
        for signum in set(received):  # any that came while they started
            pass_on(signum)
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        while not context.join():
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stops.empty():
        raise Stopped(stops.get())


def _process_entry(local_rank: int, fn: Callable, nprocs: int, port: int, stops, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # share the node's cores instead of every process taking all of them (torchrun sets OMP_NUM_THREADS)
    torch.set_num_threads(max(1, torch.get_num_threads() // nprocs))
    try:
        fn(*args)
    except Stopped as stopped:  # every rank stopped after the same epoch: a clean end, not a failure
        if local_rank == 0:  # (a non-zero exit would make the parent end the other processes)
            stops.put(str(stopped.code))
    finally:
        cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

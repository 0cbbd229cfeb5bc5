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
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


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
    """Runs ``fn(*args)`` in ``nprocs`` new local processes that form one process group."""
    port = free_port()
    log.info("starting %d processes (torch.distributed, MASTER_PORT=%d)", nprocs, port)
    torch.multiprocessing.start_processes(
        _process_entry, args=(fn, nprocs, port, args), nprocs=nprocs, start_method="spawn"
    )


def _process_entry(local_rank: int, fn: Callable, nprocs: int, port: int, args: tuple) -> None:
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
    finally:
        cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

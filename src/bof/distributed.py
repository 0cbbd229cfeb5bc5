"""Data-parallel processes on existing engines: torch.distributed (NCCL on GPUs, gloo on CPU).

Three ways in, one code path (:func:`setup` reads the standard environment variables):

* ``trainer.devices=N`` on one node: the Hydra job calls :func:`spawn`, which starts N processes with
  ``torch.multiprocessing.start_processes`` and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* for them.
* ``torchrun``: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are already set; the same code
  joins that group. Multi-node is torchrun's job.
* SLURM via hydra-submitit-launcher: each task exports its rank from the SLURM variables with
  ``submitit.helpers.TorchDistributedEnvironment`` before joining.

Only rank 0 writes files; other ranks log warnings and errors only.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched_externally() -> bool:
    """True under torchrun (or anything that set RANK / WORLD_SIZE) or in a multi-task SLURM job step."""
    return "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def setup(device_type: str) -> tuple[int, int, int]:
    """Joins the process group the environment describes; -> (rank, world_size, local_rank).

    One process and no environment: (0, 1, 0) and no group. Idempotent."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment  # hydra-submitit-launcher's engine

        TorchDistributedEnvironment().export()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=30)
        )  # env:// rendezvous
    if rank != 0:  # other ranks: warnings and errors only
        logging.getLogger("bof").setLevel(logging.WARNING)
    return rank, world_size, local_rank


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


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
        LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
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

"""Batches of *sample keys*: the main process decides, per sample, everything random that must be
consistent or reproducible, and the data loader workers only execute it.

A key carries the dataset index, the square input size of its batch (one size per batch, a function of
the global iteration, so random shapes agree across workers and processes without communication), a
per-sample seed from (seed, rank, iteration, position), and the mixup partner and ratio (partner -1:
not mixed). Because the decision travels with the key, per-epoch switches reach persistent workers (the
GluonCV mixup bug cannot happen), augmentation randomness differs per sample, rank and worker, and a
resumed run sees the same stream as an uninterrupted one whatever the number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler

from bof.data.bad_samples import BadSampleError, substitute_index
from bof.tricks.mixup import mixup_detection
from bof.utils.boxes import box_weights
from bof.utils.distributed import STOP_SIGNALS

log = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    index: int
    size: int
    seed: int
    partner: int = -1  # mixup partner's dataset index; -1: not mixed
    lam: float = 1.0  # mixup ratio of image ``index``


def sample_seed(seed: int, rank: int, iteration: int, position: int) -> int:
    """A 63-bit seed for (seed, rank, iteration, position in the batch), mixed by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, rank, iteration, position]).generate_state(1, np.uint64)[0] >> 1)


class KeyedBatchSampler(Sampler[list[SampleKey]]):
    """Wraps a sampler into batches of SampleKey. ``size_for_iteration(global_iteration) -> int``;
    ``mixup`` (a :class:`bof.tricks.mixup.DetectionMixup` or None) draws partner and ratio for every
    sample of the epochs where it is active, out of ``dataset_size`` images, in a run of ``epochs``."""

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        size_for_iteration: Callable[[int], int],
        seed: int = 0,
        rank: int = 0,
        drop_last: bool = True,
        mixup=None,
        dataset_size: int = 0,
        epochs: int = 1,
    ):
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.size_for_iteration, self.seed, self.rank = size_for_iteration, seed, rank
        self.mixup, self.dataset_size, self.epochs = mixup, dataset_size, epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batches.sampler, "set_epoch"):
            self.batches.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        first = self.epoch * len(self)
        mixing = self.mixup is not None and self.mixup.active(self.epoch, self.epochs)
        for i, batch in enumerate(self.batches):
            iteration = first + i
            size = self.size_for_iteration(iteration)
            keys = []
            for j, index in enumerate(batch):
                seed = sample_seed(self.seed, self.rank, iteration, j)
                if mixing:  # mixup (tricks/mixup.py): decided here, executed in the worker
                    lam, partner = self.mixup.draw(np.random.default_rng([seed, 1]), index, self.dataset_size)
                    keys.append(SampleKey(index, size, seed, partner, lam))
                else:
                    keys.append(SampleKey(index, size, seed))
            yield keys


class KeyedDataset(Dataset):
    """Applies ``transform(image, target, size)`` to ``dataset[key.index]`` under the key's own seed,
    after mixing it with ``dataset[key.partner]`` when the key says so. Every target leaves with
    per-box ``weights`` (the mixup ratio, 1 for an unmixed image), the weights that reach the loss.

    The global torch RNG is forked so that with ``num_workers=0`` the main process's RNG is untouched.

    With ``on_bad_sample=skip``, a sample that fails is replaced by the next good one in training
    (``substitute``); in evaluation it is dropped instead, never replaced (another image would be scored
    twice while the bad one's ground truth stayed): the item is ``(None, {"image_id", "skipped": 1})``,
    which :func:`collate_eval` leaves out and reports.
    """

    def __init__(self, dataset: Dataset, transform: Callable, substitute: bool = True):
        self.dataset, self.transform, self.substitute = dataset, transform, substitute

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(key.seed)  # CPU only: torch.manual_seed costs 0.6 ms here
            try:  # in evaluation one attempt: a bad image is dropped, not replaced
                image, target, skipped = self._load(key.index, 0, max_attempts=16 if self.substitute else 1)
            except BadSampleError:
                if self.substitute or getattr(self.dataset, "on_bad_sample", "error") == "error":
                    raise
                image_id = self.dataset.image_ids[key.index]  # a str (VOC) or a numpy int (COCO)
                image_id = image_id.item() if isinstance(image_id, np.generic) else image_id
                return None, {"image_id": image_id, "skipped": 1}
            if key.partner >= 0 and key.lam < 1.0:  # lam = 1 mixes nothing in (GluonCV skips it too)
                partner_image, partner_target, skipped = self._load(key.partner, skipped)
                image, target = mixup_detection(image, target, partner_image, partner_target, key.lam)
            else:
                target = {**target, "weights": box_weights(target)}
            image, target = self.transform(image, target, key.size)
            return image, {**target, "skipped": skipped}

    def _load(self, index: int, skipped: int, max_attempts: int = 16):
        """dataset[index]; with ``on_bad_sample=skip`` a sample that fails (corrupt or vanished file) is
        logged and replaced by the next good one. -> (image, target, number skipped so far)."""
        policy = getattr(self.dataset, "on_bad_sample", "error")
        for attempt in range(max_attempts):
            try:
                image, target = self.dataset[substitute_index(index, attempt, len(self.dataset))]
                return image, target, skipped
            except (BadSampleError, FileNotFoundError) as error:
                if policy == "error":
                    raise
                log.warning("skipping a bad sample: %s", error)
                skipped += 1
        raise BadSampleError(f"{max_attempts} bad samples in a row from index {index}: is the data readable?")


def collate_eval(batch: list) -> tuple[torch.Tensor | list[torch.Tensor], list[dict], list]:
    """:func:`collate` of the samples that loaded, and the image ids of those dropped as bad."""
    dropped = [target["image_id"] for image, target in batch if image is None]
    kept = [sample for sample in batch if sample[0] is not None]
    return (*collate(kept), dropped) if kept else ([], [], dropped)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor | list[torch.Tensor], list[dict]]:
    """-> images uint8 [B, 3, S, S] (or a list of [3, H_i, W_i] when sizes differ: images kept at their
    own size for Faster R-CNN), list of B target dicts."""
    images, targets = zip(*batch, strict=True)
    if len({tuple(i.shape) for i in images}) > 1:
        return list(images), list(targets)
    return torch.stack(images), list(targets)


def ignore_stop_signals(worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: SIGTERM and SIGUSR1 sent to the whole process group (SLURM,
    a container, a terminal) reach the workers too, and one killed would crash the run its process is
    stopping cleanly (:class:`bof.engine.epochs.StopSignal`). The loader ends its workers itself, and a
    worker whose process is gone exits on its own."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def end_workers(loader: torch.utils.data.DataLoader) -> None:
    """Ends ``loader``'s persistent workers now, as its iterator's finaliser would. A run calls it when it
    ends, however it ends: its loaders outlive it (closures that refer to one another), and since their
    workers ignore SIGTERM (:func:`ignore_stop_signals`), multiprocessing's exit handler, which sends
    SIGTERM to the daemonic workers left and then waits for them, would hang the process at exit."""
    iterator = loader._iterator  # where torch keeps persistent workers' iterator (it has no close())
    loader._iterator = None
    if iterator is not None:
        iterator._shutdown_workers()


def worker_context(start_method: str, num_workers: int):
    """The loader workers' multiprocessing context (``trainer.worker_start_method``). ``auto``: ``fork`` on
    Linux, where workers then share the data set's pages instead of each unpickling its own copy (Python
    3.14 makes ``forkserver`` the default there); the platform's default elsewhere. None without workers."""
    if num_workers == 0 or (start_method == "auto" and not sys.platform.startswith("linux")):
        return None
    context = multiprocessing.get_context("fork" if start_method == "auto" else start_method)
    if start_method == "forkserver":  # the server imports torch and bof once; workers share those pages
        context.set_forkserver_preload(["bof.data.worker_preload"])
    return context


def build_data_loader(
    dataset: Dataset,
    transform: Callable,
    batch_size: int,
    size_for_iteration: Callable[[int], int],
    shuffle: bool,
    seed: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    mixup=None,
    epochs: int = 1,
    start_method: str = "auto",
) -> torch.utils.data.DataLoader:
    """DataLoader over ``dataset`` yielding (uint8 images, targets); the batch size is per process.

    Training (``shuffle``): DistributedSampler, for one process too: its order is a pure function of
    (seed, epoch). Evaluation: process r takes images r, r + world_size, ... exactly once each
    (DistributedSampler would pad the last shard with repeated images, which would count twice in the
    mAP), and yields (images, targets, ids of images dropped as bad). ``start_method``: the workers'
    (:func:`worker_context`).
    """
    if shuffle:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
        )
    else:
        sampler = range(rank, len(dataset), world_size)
    batch_sampler = KeyedBatchSampler(
        sampler, batch_size, size_for_iteration, seed, rank, drop_last, mixup, len(dataset), epochs
    )
    # the loader's own generator: each new iterator draws its workers' base seed from it, not from the
    # global RNG that Faster R-CNN's samplers use (a resumed run creates one more iterator than the
    # uninterrupted one would have); the samples' randomness comes from their keys anyway
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        KeyedDataset(dataset, transform, substitute=shuffle),
        batch_sampler=batch_sampler,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate if shuffle else collate_eval,
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_stop_signals,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context=worker_context(start_method, num_workers),
    )

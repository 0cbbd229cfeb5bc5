"""Checkpoints: one dict, written atomically, loadable with ``torch.load(..., weights_only=True)`` on any
device (tensors load to the CPU first) and by any number of processes.

A checkpoint holds model, optimizer, lr scheduler, AMP scaler, epoch, RNG states and the config, resolved
(what the run used) and unresolved (``config_source``: what bof-eval's overrides re-resolve).
It is written to a temporary file in the same directory, flushed to disk, then renamed over the old one,
so a crash or a stop at any moment leaves the last good checkpoint intact.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import numpy as np
import torch

from bof.utils.atomic import write_atomically
from bof.utils.fingerprint import differences, warn_if_changed

log = logging.getLogger("bof.utils.checkpoint")


def save_checkpoint(state: dict, path: str | Path) -> Path:
    return write_atomically(path, lambda f: torch.save(state, f))


def to_host(state):
    """A copy of ``state`` whose tensors live in host memory, detached from the training tensors."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: to_host(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(to_host(v) for v in state)
    return state


class CheckpointWriter:
    """Writes checkpoints without stalling training: the state is copied to host memory at once (the next
    step may change the weights), then written atomically by a background thread. One write at a time:
    a new one first waits for the last; :meth:`wait` (at the end of a run, or before exiting on a
    signal) joins it and re-raises its error, so a failed write is never silent."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict, path: str | Path) -> None:
        host = to_host(state)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(host, Path(path)), name="checkpoint")
        self._thread.start()

    def _write(self, state: dict, path: Path) -> None:
        try:
            save_checkpoint(state, path)
        except BaseException as error:  # reported by wait(), in the training thread
            self._error = error

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load_checkpoint(path: str | Path, map_location="cpu", expect: tuple[str, ...] = ()) -> dict:
    """A checkpoint file's dict; a missing, truncated or foreign file, or one without the ``expect``ed
    entries, is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated or empty (no zip directory), garbage, another pickle
        other = path.parent / ("last.pt" if path.name == "best.pt" else "best.pt")
        # torch's text may advise weights_only=False, i.e. running the file's pickle: never repeated here
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if "weights_only" in str(error):
            why = "it holds Python objects beyond tensors and plain containers, which bof never unpickles"
        raise ValueError(
            f"{path} is not a readable torch checkpoint ({why}). Delete it to start afresh, or resume "
            f"from another one: trainer.resume={other}"
        ) from None
    missing = [key for key in expect if key not in checkpoint] if isinstance(checkpoint, dict) else expect
    if missing or not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds no {missing} entries: not a checkpoint written by bof-train")
    return checkpoint


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain containers (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's GPU only: resumable on any GPU count
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older checkpoints: every visible GPU's state; this process takes its own
        cuda = cuda[torch.cuda.current_device() % len(cuda)] if torch.cuda.is_available() and cuda else None
    if cuda is not None and torch.cuda.is_available():  # on a CPU a GPU run's state is dropped
        torch.cuda.set_rng_state(cuda)


def checkpoint_state(
    model,
    optimizer,
    lr_scheduler,
    scaler,
    epoch: int,
    best_map: float,
    config: dict,
    class_names=None,
    counts: dict | None = None,
    config_source: dict | None = None,
) -> dict:
    """``counts``: what the run has counted so far (wall time, skipped samples and steps), carried over
    a resume so that metrics.json covers the whole run. ``config_source``: the unresolved config
    (:func:`bof.utils.stored_config.portable_config`)."""
    return {
        "counts": dict(counts or {}),
        "class_names": list(class_names or []),  # bof-predict names its detections without the data
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_map": best_map,
        "rng": rng_state(),
        "config": config,
        **({"config_source": config_source} if config_source is not None else {}),
    }


def check_finite(model, optimizer, epoch: int, last: Path) -> None:
    """Before a checkpoint is written: every weight, buffer and optimizer state finite. A state that is not
    is never saved: FloatingPointError naming the tensors and the last good checkpoint."""
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    bad += [
        f"optimizer {k} of a parameter"
        for state in optimizer.state.values()
        for k, t in state.items()
        if torch.is_tensor(t) and t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        good = f"{last} (from before this epoch)" if last.is_file() else "none: no checkpoint was written yet"
        raise FloatingPointError(
            f"after epoch {epoch + 1}, {len(bad)} tensors are not finite ({', '.join(bad[:3])}, ...), so "
            f"nothing was saved; the last good checkpoint: {good}. Lower optimizer.lr, or trainer.grad_clip"
        )


def restore(path: Path | None, model, optimizer, lr_scheduler, scaler, config: dict | None = None):
    """Loads a checkpoint into the training state; -> (first epoch to run, best metric so far, the run's
    counts so far). Another ``config`` than the checkpoint's is allowed (more epochs, another data root)
    and logged."""
    if path is None:
        return 0, -1.0, {}
    expect = ("model", "optimizer", "lr_scheduler", "scaler", "epoch", "rng")
    checkpoint = load_checkpoint(path, expect=expect)
    if config is not None:
        # the optimizer's and scheduler's states restore the checkpoint's lr, momentum and weight decay: a
        # new value would be recorded (metrics.json, fingerprint) but never trained with, so it is refused
        changed = [
            c for c in differences(checkpoint.get("config") or {}, config) if c.startswith("optimizer.")
        ]
        if changed:
            raise ValueError(
                f"resuming {path} with another optimizer ({'; '.join(changed)}): the checkpoint's optimizer "
                "state would keep its own values. Resume with the checkpoint's values, or start a new run "
                "(trainer.resume=false, another run directory) with the new ones"
            )
        warn_if_changed(checkpoint.get("config"), config, path)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # another architecture: say which config keys made it differ
        changed = differences(checkpoint.get("config") or {}, config or {})
        keys = [c for c in changed if c.startswith(("model.", "data."))] or changed
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ValueError(
            f"{path} does not fit this model ({first[:300]}). Config keys that differ "
            f"from the checkpoint's: {'; '.join(keys) or 'none'}. Use the checkpoint's values, or "
            "trainer.resume=false (another run directory) to train this model from scratch"
        ) from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    log.info("resumed from %s at epoch %d", path, checkpoint["epoch"] + 1)
    return checkpoint["epoch"] + 1, checkpoint["best_map"], checkpoint.get("counts", {})

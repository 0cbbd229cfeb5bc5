"""Bad input: one error type that names the file and the problem, and the ``data.on_bad_sample`` policy.

``error`` (default) stops with that message. ``skip`` logs one warning per file, leaves the sample out
(at load time) or replaces it by the next good one (a corrupt image found while training), and counts:
the count is reported after every epoch and in metrics.json.
"""

from __future__ import annotations

POLICIES = ("error", "skip")


class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the file and the problem."""


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got {policy!r}")
    return policy


def clip_boxes(target: dict, height: int, width: int) -> dict:  # target tensors: torch
    """Boxes [N, 4] xyxy clipped to the image; boxes left without area are dropped with their per-box
    fields (``labels``, ``difficult``). The same rule for VOC and COCO."""
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return {**target, "boxes": boxes}
    return {
        **target,
        "boxes": boxes[keep],
        **{k: target[k][keep] for k in ("labels", "difficult") if k in target},
    }


def substitute_index(index: int, attempt: int, size: int) -> int:
    """The sample tried instead of ``index`` on the ``attempt``-th failure (the next ones, in order)."""
    return (index + attempt) % size

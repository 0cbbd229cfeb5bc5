"""Random shapes training for YOLOv3 (paper section 3.6; docs/fidelity.md "Random shapes").

Every ``interval`` iterations a new square input size is drawn uniformly from min_size, min_size +
step, ..., max_size (320..608 in steps of 32, a new size every 10 iterations). One size holds for every
image of a batch and for every process: the size is a pure function of (seed, global iteration), so the
ranks of a multi-GPU job and the workers of a data loader agree without communicating (YOLOX
broadcasts the size from rank 0 instead). Validation keeps the fixed ``model.val_size``. Anchors are in
absolute pixels and are not rescaled with the input size.
"""

from __future__ import annotations

import numpy as np


class RandomShapes:
    def __init__(
        self, min_size: int = 320, max_size: int = 608, step: int = 32, interval: int = 10, seed: int = 0
    ):
        if min_size % 32 or step % 32 or step < 32 or min_size > max_size or interval < 1:
            raise ValueError(
                "random_shapes: min_size and step must be positive multiples of 32 (the YOLOv3 stride), "
                f"min_size <= max_size and interval >= 1; got {min_size}, {max_size}, {step}, {interval}"
            )
        self.sizes = tuple(range(min_size, max_size + 1, step))
        self.interval, self.seed = interval, seed

    def __call__(self, iteration: int) -> int:
        """The input size of global iteration ``iteration`` (0-based)."""
        window = iteration // self.interval
        return self.sizes[int(np.random.default_rng([self.seed, window]).integers(len(self.sizes)))]

    def __repr__(self) -> str:
        return f"random shapes {self.sizes[0]}..{self.sizes[-1]} every {self.interval} iterations"


class FixedShape:
    """One input size for every iteration (random shapes off)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, iteration: int) -> int:
        return self.size

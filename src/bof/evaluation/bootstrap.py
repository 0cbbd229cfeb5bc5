"""Paired bootstrap intervals for the differences between a sweep's rows (bof-report).

The rows of a sweep are evaluated on the same validation images, so a difference between two rows is
resampled over images, the same resample for every row (paired): each replicate counts every image as
often as a draw of N images with replacement picked it (multinomial weights), and every run's metric is
recomputed under those weights (:class:`bof.evaluation.weighted_ap.WeightedMetric`). With several seeds per
row, each replicate also draws the row's seeds with replacement (a two-level, hierarchical bootstrap), the
same draw positions for every row, so rows run with the same seeds are paired by seed too; the row's
replicate is the mean over its drawn seeds, as its point estimate is the mean over its seeds. The interval
of a difference is the percentile interval of its replicates. Everything is seeded: the same runs and
``seed`` give the same report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bof.evaluation.ranked_record import RankedDetections
from bof.evaluation.weighted_ap import WeightedMetric


@dataclass(frozen=True)
class Interval:
    """A difference's percentile interval at ``level`` (0.95: the 2.5th and 97.5th percentiles)."""

    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Replicates:
    """Each row's metric (in %) under the same ``replicates`` image resamples: ``values[row]`` [B]; rows
    whose runs have no record, or were evaluated on other images, are in ``missing`` with the reason."""

    values: dict[str, np.ndarray]
    missing: dict[str, str]
    num_images: int
    replicates: int
    seed: int
    seeds_per_row: dict[str, int]

    def interval(self, row: str, reference: str, level: float = 0.95) -> Interval | None:
        """The interval of ``row - reference``; None when either has no replicates."""
        if row not in self.values or reference not in self.values:
            return None
        deltas = self.values[row] - self.values[reference]
        low, high = np.percentile(deltas, [50 * (1 - level), 50 * (1 + level)])
        return Interval(float(low), float(high), level)


def resample_rows(
    runs: dict[str, list[RankedDetections | None]],
    replicates: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> Replicates:
    """The rows' replicates from their runs' records (``runs[row]``: one record per seed, None for a run
    without one). The images are those of the first complete row; a row whose records name other images
    (another validation set, images dropped as bad) is left out rather than compared unpaired."""
    missing = {row: "no per-image record" for row, records in runs.items() if not records or None in records}
    complete = {row: records for row, records in runs.items() if row not in missing}
    if not complete:
        return Replicates({}, missing, 0, replicates, seed, {})
    image_ids = next(iter(complete.values()))[0].image_ids
    for row, records in list(complete.items()):
        if any(not np.array_equal(r.image_ids, image_ids) for r in records):
            missing[row] = "evaluated on other validation images"
            del complete[row]
    rng = np.random.default_rng(seed)
    num_images = len(image_ids)
    weights = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=replicates)
    seed_draws = rng.random((replicates, max(len(r) for r in complete.values())))
    values = {}
    bar = tqdm(total=sum(map(len, complete.values())), desc="bootstrap", unit="run", disable=not progress)
    for row, records in complete.items():
        per_run = []  # [S, B]
        for record in records:
            per_run.append(100 * WeightedMetric(record)(weights))
            bar.update()
        per_run = np.stack(per_run)
        drawn = (seed_draws[:, : len(records)] * len(records)).astype(np.int64)  # [B, S]: seeds drawn
        values[row] = per_run[drawn, np.arange(replicates)[:, None]].mean(axis=1)
    bar.close()
    return Replicates(values, missing, num_images, replicates, seed, {r: len(v) for r, v in complete.items()})

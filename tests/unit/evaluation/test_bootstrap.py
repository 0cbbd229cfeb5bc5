"""The paired bootstrap of a sweep's rows: identical rows differ by exactly 0 with the interval [0, 0]
(images and seeds drawn alike for every row), a real difference is found, the draws are seeded, and rows
that cannot be paired are left out with the reason."""

import dataclasses

import numpy as np

from bof.evaluation.bootstrap import resample_rows
from tests.helpers.generated import simulated_voc_record as record


def test_identical_rows_give_exactly_zero_and_a_better_detector_a_positive_interval():
    runs = {"base": [record(1)], "same": [record(1)], "better": [record(2, skill=0.95)]}
    result = resample_rows(runs, replicates=300, seed=0)
    same = result.interval("same", "base")
    assert (same.low, same.high) == (0.0, 0.0) and not same.excludes_zero
    better = result.interval("better", "base")
    assert better.low > 0 and better.excludes_zero
    assert np.ptp(result.values["base"]) > 0  # the replicates vary: images are resampled
    again = resample_rows(runs, replicates=300, seed=0)
    assert np.array_equal(again.values["better"], result.values["better"])  # seeded
    other = resample_rows(runs, replicates=300, seed=1)
    assert not np.array_equal(other.values["better"], result.values["better"])


def test_seeds_are_resampled_and_paired_by_position():
    """Two rows with the same three runs (seed k of one = seed k of the other) still differ by exactly 0;
    each replicate of a 3-seed row is the mean of 3 of its runs drawn with replacement (under that
    replicate's image weights), not always the mean of all three."""
    seeds = [record(s) for s in (1, 2, 3)]
    result = resample_rows({"base": seeds, "copy": list(seeds)}, replicates=400, seed=0)
    copy = result.interval("copy", "base")
    assert (copy.low, copy.high) == (0.0, 0.0)
    assert result.seeds_per_row == {"base": 3, "copy": 3}
    # the same image weights (drawn first, whatever the seeds), each run alone
    alone = resample_rows({f"s{k}": [r] for k, r in enumerate(seeds)}, replicates=400, seed=0).values
    runs = np.stack([alone[f"s{k}"] for k in range(3)])  # [3, B]
    draws = [(a, b, c) for a in range(3) for b in range(a, 3) for c in range(b, 3)]
    means = np.stack([runs[list(d)].mean(axis=0) for d in draws])  # [10 multisets, B]
    assert np.abs(means - result.values["base"]).min(axis=0).max() < 1e-9  # each replicate is one of them
    assert not np.allclose(result.values["base"], runs.mean(axis=0))  # and not always all three


def test_rows_without_records_or_on_other_images_get_no_interval():
    base = record(1)
    shifted = dataclasses.replace(base, image_ids=np.array([f"x{i}" for i in base.image_ids]))
    result = resample_rows({"base": [base], "old": [None], "elsewhere": [shifted]}, replicates=50)
    assert result.missing == {
        "old": "no per-image record",
        "elsewhere": "evaluated on other validation images",
    }
    assert result.interval("old", "base") is None and result.interval("elsewhere", "base") is None

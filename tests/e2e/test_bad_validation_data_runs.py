"""A bad validation image is an error before training, or is left out of the evaluation with its ground
truth and counted: never replaced by another image (which would be scored twice while the bad one's
ground truth stayed, so a perfect detector would lose points)."""

import pytest
from hydra.utils import instantiate

from bof.data.bad_samples import BadSampleError
from bof.engine.evaluator import build_evaluator
from bof.train import train


def test_validation_images_are_checked_by_header_before_the_first_epoch(make_cfg, tmp_path):
    cfg = make_cfg("trainer.epochs=1")
    victim = instantiate(cfg.data.val).image_path(2)
    original = victim.read_bytes()
    victim.write_bytes(original[:100])  # not even a header
    try:
        with pytest.raises(BadSampleError, match=f"{victim.name}: cannot decode the image"):
            train(cfg)
        assert not (tmp_path / "run" / "last.pt").exists()  # found before any training
        skipping = instantiate(make_cfg("data.on_bad_sample=skip").data.val)
    finally:
        victim.write_bytes(original)  # the cache is shared by the session
    assert len(skipping) == cfg.data.generator.num_val - 1 and len(skipping.skipped) == 1
    assert (
        victim.stem not in skipping.image_ids and victim.stem not in build_evaluator(skipping).voc.image_ids
    )

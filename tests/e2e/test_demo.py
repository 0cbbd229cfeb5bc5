"""The README's promise: the default run (`make train`) reaches VOC07 mAP >= 0.60 on the synthetic data.

About three minutes on 2 CPU cores, so it is marked slow: `make test-all` runs it, `make test` does not."""

import pytest
from hydra import compose, initialize_config_dir

from bof.config import CONFIG_DIR
from bof.train import train


@pytest.mark.slow
def test_default_demo_reaches_its_promised_map(tmp_path, cache_dir):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"data.root={cache_dir}", f"trainer.output_dir={tmp_path}", "trainer.progress=false"],
        )
    assert train(cfg)["map"] >= 0.60

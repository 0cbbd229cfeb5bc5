"""bof-train's entry point: --help without torch, and `+debug=fast`, the tests' tiny run in one flag."""

import subprocess
import sys

from hydra import compose, initialize_config_dir

from bof.config import CONFIG_DIR
from bof.train import train

HELP_WITHOUT_TORCH = """
import sys
sys.argv = ["bof-train", "--help"]
import bof.cli.train
try:
    bof.cli.train.main()
except SystemExit:
    pass
assert "torch" not in sys.modules, "--help imported torch"
"""


def test_help_composes_the_config_without_importing_torch():
    done = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bof-train: train an object detector" in done.stdout and "mixup: beta1, beta15" in done.stdout


def test_debug_fast_is_the_tiny_run_with_any_trick(tmp_path, cache_dir):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        overrides = [
            "+debug=fast",
            "random_shapes=on",
            "mixup=beta15",
            f"data.root={cache_dir}",
            f"trainer.output_dir={tmp_path}",
        ]
        cfg = compose("train", overrides=overrides)
    assert cfg.model.net.width == 0.0625 and cfg.trainer.epochs == 2 and cfg.data.generator.num_train == 16
    metrics = train(cfg)
    assert metrics["epochs"] == 2 and 0.0 <= metrics["map"] <= 1.0

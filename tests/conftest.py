"""Shared fixtures: the real configs composed with tiny, fast overrides."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bof.config import CONFIG_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # real VOC XML and a golden COCO case (README there)

# a YOLOv3 of width 1/16 on 16 synthetic 64-96 px images: a training epoch takes about a second
TINY_YOLO = ["model.net.width=0.0625", "model.train_size=64", "model.val_size=64"]
TINY_FASTER_RCNN = [
    "model.net.min_size=64",
    "model.net.max_size=96",
    "model.net.rois_per_image=16",
    "model.net.pretrained_backbone=false",  # no internet in tests
]
TINY = [
    *TINY_YOLO,
    "++data.generator.num_train=16",
    "++data.generator.num_val=8",
    "++data.generator.num_test=4",
    "++data.generator.image_size=[64,96]",
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.eval_interval=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.num_images_logged=2",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generated once per parameter set)."""
    return tmp_path_factory.mktemp("bof-cache")


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """compose("train", TINY + overrides) writing into a fresh run directory."""
    return config_maker(tmp_path, cache_dir)


def config_maker(tmp_path: Path, cache_dir: Path):
    """make_cfg's function, for fixtures of a wider scope."""

    def make(*overrides: str, output_dir: Path | None = None):
        tiny = TINY
        own_sizes = ("model=faster_rcnn", "experiment=faster_rcnn", "experiment=resnet")
        if any(o.startswith(own_sizes) for o in overrides):
            tiny = [o for o in TINY if o not in TINY_YOLO] + TINY_FASTER_RCNN
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    *tiny,
                    f"data.root={cache_dir}",
                    f"trainer.output_dir={output_dir or tmp_path / 'run'}",
                    *overrides,
                ],
            )

    return make

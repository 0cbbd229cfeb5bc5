"""The synthetic generator's scene options: off by default (today's pictures and folder names, byte for
byte), each visibly doing what it says when on, deterministic, and read by every synthetic data set."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bof.config import CONFIG_DIR
from bof.data import synthetic_render as R
from bof.data import synthetic_scene as S
from bof.data.image_folder import synthetic_image_folder
from bof.data.synthetic import (
    SYNTHETIC_CLASSES,
    ensure_synthetic_voc,
    generate_synthetic_voc,
    synthetic_voc,
    synthetic_voc_name,
)
from bof.data.synthetic_coco import synthetic_coco
from bof.data.voc import VOCDetection

N = 50  # images per measurement
WIDE = (0.04, 0.9)
ALL_ON = dict(object_scale=list(WIDE), max_objects=10, occlusion=0.5, clutter=[3, 8], context=0.8)
SMALL = dict(num_train=3, num_val=2, num_test=1, image_size=[64, 96])

# Computed with the generator before the scene options existed (commit 6cb90ba): sha256 of the pixels
# and the objects of render_synthetic_image(default_rng([seed, split, index]), image_size).
TODAY = {
    (0, 0, 0, (224, 320)): "1c770e216a565b709c468157eefac1caf12fb723bca18aa39a64412148b5f71a",
    (0, 1, 5, (224, 320)): "a3de830e5188eb2af7a31b00ebffa450f536b0e3ef135b499f3c2df7bcb4154f",
    (3, 2, 7, (224, 320)): "4dfb55f38d908c42e5647b15dca4b05478d1cc36c82e1b7d51368fa5d16f467f",
    (7, 0, 11, (224, 320)): "af56660c358853dd368b62e670ee4f3bc691b0ec73b20afc3b331e2580b543e6",
    (0, 0, 3, ((80, 80), (48, 48))): "047ea896cda39aff2cdd78a63b0d81c44005eaf8d43a47f76c4f63289bd45b8f",
}
TODAY_NAMES = {  # synthetic_voc_name of the default generator and of +debug=fast's
    "synthetic-af7511c860": {},
    "synthetic-c7ae01f8c9": dict(num_train=16, num_val=8, num_test=4, image_size=[64, 96]),
}


def digest(image: np.ndarray, objects: list[dict]) -> str:
    h = hashlib.sha256(image.tobytes())
    h.update(json.dumps(objects, sort_keys=True).encode())
    return h.hexdigest()


def render(n: int = N, split: int = 0, **options) -> list[tuple[np.ndarray, list[dict]]]:
    return [
        R.render_synthetic_image(np.random.default_rng([0, split, i]), (224, 320), **options)
        for i in range(n)
    ]


def box_sides(scenes) -> np.ndarray:
    """Visible box side (geometric mean) / shorter image side of every object."""
    out = []
    for image, objects in scenes:
        for x1, y1, x2, y2 in (o["box"] for o in objects):
            out.append(np.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / min(image.shape[:2]))
    return np.array(out)


def overlapping_pairs(scenes) -> float:
    """The fraction of object pairs in an image whose boxes overlap."""
    pairs = hits = 0
    for _, objects in scenes:
        for a, b in itertools.combinations([o["box"] for o in objects], 2):
            pairs += 1
            hits += min(a[2], b[2]) >= max(a[0], b[0]) and min(a[3], b[3]) >= max(a[1], b[1])
    return hits / pairs


def occluded(scenes) -> float:
    """The fraction of objects partly hidden by another (visibility < 1 although not truncated)."""
    flags = [o["visibility"] < 1 and not o["truncated"] for _, objects in scenes for o in objects]
    return float(np.mean(flags))


def free_mask(image: np.ndarray, objects: list[dict]) -> np.ndarray:
    """True at the pixels outside every annotated box."""
    free = np.ones(image.shape[:2], bool)
    for x1, y1, x2, y2 in (o["box"] for o in objects):
        free[y1 - 1 : y2, x1 - 1 : x2] = False
    return free


def saturation(image: np.ndarray) -> np.ndarray:
    f = image.astype(np.int16)
    return f.max(-1) - f.min(-1)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_scenes():
    return render()


def test_defaults_draw_todays_pictures_and_names(tmp_path):
    for (seed, split, index, image_size), expected in TODAY.items():
        rng = np.random.default_rng([seed, split, index])
        assert digest(*R.render_synthetic_image(rng, image_size)) == expected, (seed, split, index)
    for name, params in TODAY_NAMES.items():
        assert synthetic_voc_name(**params) == name
        # the options spelled out at their defaults, as conf/data/synthetic.yaml does
        explicit = dict(object_scale=[0.05, 0.6], max_objects=6, occlusion=0.0, clutter=[0, 0], context=None)
        assert synthetic_voc_name(**params, **explicit, num_ooc=0) == name
    out = generate_synthetic_voc(tmp_path / "d", 2, 1, 1, seed=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"] == dict(num_train=2, num_val=1, num_test=1, image_size=[224, 320], seed=3)
    assert manifest["splits"] == ["train", "val", "test"] and manifest["generator_version"] == 1
    assert sorted(p.name for p in (out / "ImageSets" / "Main").iterdir()) == [
        "test.txt",
        "train.txt",
        "val.txt",
    ]


@pytest.mark.parametrize("data", ["synthetic", "synthetic_cls", "synthetic_coco"])
def test_every_synthetic_config_has_the_options_at_their_defaults(data):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}"])
    generator = OmegaConf.to_container(cfg.data.generator)
    assert generator["object_scale"] == [0.05, 0.6] and generator["max_objects"] == 6
    assert generator["occlusion"] == 0.0 and generator["clutter"] == [0, 0]
    assert generator["context"] is None and generator["num_ooc"] == 0
    assert synthetic_voc_name(**generator) == "synthetic-af7511c860"


def test_object_scale_widens_the_range_of_sizes(default_scenes):
    default, wide = box_sides(default_scenes), box_sides(render(object_scale=WIDE))
    assert default.max() < 0.62
    assert wide.max() > 0.8 and wide.min() < 0.06
    assert np.percentile(wide, 90) > np.percentile(default, 90) + 0.05


def test_max_objects_crowds_the_scenes(default_scenes):
    default, crowded = default_scenes, render(max_objects=12)
    assert max(len(o) for _, o in default) == 6 and max(len(o) for _, o in crowded) > 8
    assert sum(len(o) for _, o in crowded) > 1.5 * sum(len(o) for _, o in default)


def test_occlusion_overlaps_and_partly_hides_objects(default_scenes):
    default, occluding = default_scenes, render(occlusion=0.6)
    assert occluded(occluding) > occluded(default) + 0.05
    assert overlapping_pairs(occluding) > 1.5 * overlapping_pairs(default)
    # the visibility, difficult and drop rules still apply
    objects = [o for _, os in render(20, occlusion=1.0) for o in os]
    assert min(o["visibility"] for o in objects) >= R.DROP_VISIBILITY
    assert all(o["difficult"] for o in objects if o["visibility"] < R.DIFFICULT_VISIBILITY)
    assert np.mean([o["difficult"] for o in objects]) < 0.2


def test_clutter_adds_unannotated_shapes_behind_the_same_objects(default_scenes):
    saturated = {"off": 0, "on": 0}
    changed = changed_muted = 0
    for (plain, objects), (cluttered, same) in zip(default_scenes, render(clutter=(3, 8)), strict=True):
        assert same == objects  # distractors are drawn after the objects: the annotations are unchanged
        free = free_mask(plain, objects)
        saturated["off"] += int((saturation(plain)[free] > 100).sum())
        saturated["on"] += int((saturation(cluttered)[free] > 100).sum())
        diff = np.abs(plain.astype(np.int16) - cluttered.astype(np.int16)).max(-1) > 30
        changed += int(diff[free].sum())
        changed_muted += int((diff & (saturation(cluttered) < 70))[free].sum())
    assert saturated["off"] == 0  # today's backgrounds are muted: colour alone finds today's objects
    assert saturated["on"] > 20_000  # class-like colours outside every box
    assert changed_muted > 20_000  # muted distractors too
    assert changed > 60_000


def test_clutter_shapes_are_no_class_shapes():
    assert not set(S.CLUTTER_SHAPES) & set(SYNTHETIC_CLASSES)
    for shape, angle in itertools.product(S.CLUTTER_SHAPES, np.linspace(0, 2 * np.pi, 13)):
        mask = S.clutter_mask(shape, 64, 64, angle)
        assert 0.1 < mask.mean() < 0.9, shape
        for name in SYNTHETIC_CLASSES:
            cls = R._shape_mask(name, 64, 64)
            assert (mask & cls).sum() / (mask | cls).sum() < 0.65, (shape, angle, name)


@pytest.mark.parametrize("p", [0.0, 0.5, 0.8, 1.0])
def test_context_puts_objects_in_their_home_environment(p):
    scenes = render(80, context=p)
    home = [o["label"] in S.HOME_CLASSES[o["environment"]] for _, objects in scenes for o in objects]
    # p at home, and the rest uniform over all 6 classes, of which 2 are at home
    assert abs(np.mean(home) - (p + (1 - p) / 3)) < 0.06
    assert {o["environment"] for _, objects in scenes for o in objects} == {0, 1, 2}


def test_environments_are_distinct_muted_palettes():
    dominant = {0: 2, 1: 1, 2: 0}  # cool: blue, green-brown: green, warm: red
    hits, saturations = [], []
    for image, objects in render(60, context=0.8):
        free = free_mask(image, objects)
        mean = image[free].astype(np.float32).mean(0)
        hits.append(int(np.argmax(mean - mean.mean())) == dominant[objects[0]["environment"]])
        saturations.append(np.percentile(saturation(image)[free], 95))
    assert np.mean(hits) > 0.9
    assert max(saturations) < 70  # as muted as today's backgrounds (95th percentile < 60 there)
    assert [e["name"] for e in S.ENVIRONMENTS] == ["cool", "green-brown", "warm"]
    assert sorted(c for home in S.HOME_CLASSES for c in home) == list(range(len(SYNTHETIC_CLASSES)))


def test_out_of_context_scenes_have_no_home_class():
    scenes = render(split=3, **ALL_ON, ooc=True)
    objects = [o for _, os in scenes for o in os]
    assert len(objects) > 100 and not any(o["label"] in S.HOME_CLASSES[o["environment"]] for o in objects)
    assert len({o["label"] for o in objects}) == len(SYNTHETIC_CLASSES)


def test_all_options_render_deterministically():
    first, again = render(10, **ALL_ON), render(10, **ALL_ON)
    assert [digest(*s) for s in first] == [digest(*s) for s in again]
    assert len({digest(*s) for s in first}) == 10


def test_the_ooc_split_is_stored_and_read_by_every_synthetic_data_set(tmp_path):
    generator = dict(**SMALL, **ALL_ON, num_ooc=4)
    ds = synthetic_voc(tmp_path, "ooc", generator)
    assert len(ds) == 4 and ds.image_ids[0] == "ooc_000000"
    year_dir = ensure_synthetic_voc(tmp_path, **generator)
    manifest = json.loads((year_dir / "manifest.json").read_text())
    assert manifest["splits"] == ["train", "val", "test", "ooc"]
    assert manifest["params"]["num_ooc"] == 4 and manifest["params"]["context"] == 0.8
    image, target = ds[0]
    assert image.shape[0] == 3 and len(target["labels"]) >= 1
    for split in ("train", "val", "test"):  # the other splits as before
        assert (
            len(VOCDetection(tmp_path, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES))
            == SMALL[f"num_{split}"]
        )
    coco = synthetic_coco(tmp_path, "ooc", generator, train=False)
    assert len(coco) == 4
    # the ooc images are rendered with their own seeds (split index 3) and no home class
    again = generate_synthetic_voc(tmp_path / "again", **generator)
    assert files(again) == {k: v for k, v in files(year_dir).items() if not k.startswith("coco")}
    with pytest.raises(ValueError, match="num_ooc > 0 needs context"):
        synthetic_voc_name(**SMALL, num_ooc=2)


def test_each_option_names_its_own_folder():
    names = {synthetic_voc_name(**SMALL)}
    for key, value in [*ALL_ON.items(), ("num_ooc", 3)]:
        extra = {"context": 0.5} if key == "num_ooc" else {}
        names.add(synthetic_voc_name(**SMALL, **extra, **{key: value}))
    assert len(names) == len(ALL_ON) + 2
    for bad in (
        dict(object_scale=[0.5, 0.2]),
        dict(object_scale=[0.0, 0.5]),
        dict(max_objects=0),
        dict(occlusion=1.5),
        dict(clutter=[3, 1]),
        dict(context=2.0),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            synthetic_voc_name(**bad)


def test_classification_crops_of_realistic_scenes(tmp_path):
    generator = dict(**{**SMALL, "num_train": 12}, **ALL_ON, num_ooc=10)  # every class in both splits
    train = synthetic_image_folder(tmp_path, "train", generator, crop_size=32)
    ooc = synthetic_image_folder(tmp_path, "ooc", generator, crop_size=32)
    assert train.classes == sorted(SYNTHETIC_CLASSES) and len(train) >= 3 and len(ooc) >= 1
    image, label = train[0]
    assert image.size == (32, 32) and 0 <= label < len(SYNTHETIC_CLASSES)
    assert (ensure_synthetic_voc(tmp_path, **generator) / "cls32" / "ooc").is_dir()

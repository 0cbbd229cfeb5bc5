"""The built-in synthetic detection data set: storage and data sets (the demo default).

Why it exists: the demo must train and evaluate end to end on a laptop CPU in minutes with no download,
through exactly the same code path as real VOC (:class:`bof.data.voc.VOCDetection`, the VOC07 11-point
evaluator). So the generator writes a VOC "year dir"::

    <out_dir>/JPEGImages/<split>_<index:06d>.jpg
    <out_dir>/Annotations/<split>_<index:06d>.xml   real VOC XML: size, object/name/difficult/bndbox
    <out_dir>/ImageSets/Main/{train,val,test}.txt     and ooc.txt when num_ooc > 0
    <out_dir>/manifest.json                          parameters and class names

What the images hold (classes, objects, difficult flags, backgrounds) is :mod:`bof.data.synthetic_render`.
Image ``i`` of split ``s`` uses ``np.random.default_rng([seed, s, i])`` (s: 0 train, 1 val, 2 test,
3 ooc), so every image is independent of the others and of the split sizes; same parameters ->
byte-identical files. Generation writes into a temporary sibling folder renamed into place at the end,
so an interrupted run never leaves a half data set where a complete one is expected (a hard kill may
leave a hidden ``.<name>.tmp-*`` folder beside it, which is never read and can be deleted).

Scene options (:data:`SCENE_DEFAULTS`, all off by default; the renderer's module docstring says what each
does and why): ``object_scale``, ``max_objects``, ``occlusion``, ``clutter`` and ``context`` apply to
every split; ``num_ooc`` images of the extra split ``ooc`` ("out of context": every object's class is
one not at home in the image's environment) need ``context``. An option at its default is left out of
the manifest, so the folders (and names) of data sets made before the options existed stay valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bof.data.synthetic_render import (
    JPEG_QUALITY,
    MAX_OBJECTS,
    MAX_REL_SIZE,
    MIN_REL_SIZE,
    SYNTHETIC_CLASSES,
    annotation_xml,
    render_synthetic_image,
)
from bof.data.voc import VOCDetection

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
OOC_SPLIT = "ooc"  # the out-of-context split, after SPLITS (split index 3), only when num_ooc > 0
# The scene options' defaults: off, the pictures of a generator without them.
SCENE_DEFAULTS = dict(
    object_scale=[MIN_REL_SIZE, MAX_REL_SIZE],
    max_objects=MAX_OBJECTS,
    occlusion=0.0,
    clutter=[0, 0],
    context=None,
)
# Bump when the generated images change, so cached datasets of older versions are not reused.
GENERATOR_VERSION = 1


def _image_size(image_size) -> list:
    """(min, max) for both sides, or ((w_min, w_max), (h_min, h_max)), e.g. ((500, 500), (375, 375))
    for VOC's photo size; returned as plain lists, the flat form kept flat (cached folders stay valid)."""
    nested = all(hasattr(v, "__len__") for v in image_size)
    ranges = [list(map(int, v)) for v in image_size] if nested else [list(map(int, image_size))]
    if len(ranges) != (2 if nested else 1) or not all(len(r) == 2 and 16 <= r[0] <= r[1] for r in ranges):
        raise ValueError(
            "image_size must be (min, max) or ((w_min, w_max), (h_min, h_max)) with 16 <= min <= max, "
            f"got {image_size}"
        )
    return ranges if nested else ranges[0]


def _scene_options(object_scale, max_objects, occlusion, clutter, context) -> dict:
    """The scene options checked and as plain JSON values (lists, ints, floats, None)."""
    lo, hi = (float(v) for v in object_scale)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"object_scale must be [min, max] with 0 < min <= max <= 1, got {object_scale}")
    if int(max_objects) != max_objects or max_objects < 1:
        raise ValueError(f"max_objects must be an integer >= 1, got {max_objects}")
    if not 0 <= float(occlusion) <= 1:
        raise ValueError(f"occlusion must be a probability in [0, 1], got {occlusion}")
    c_lo, c_hi = (int(v) for v in clutter)
    if not 0 <= c_lo <= c_hi or list(clutter) != [c_lo, c_hi]:
        raise ValueError(f"clutter must be [min, max] integers with 0 <= min <= max, got {clutter}")
    if context is not None and not 0 <= float(context) <= 1:
        raise ValueError(f"context must be null (off) or a probability in [0, 1], got {context}")
    return dict(
        object_scale=[lo, hi],
        max_objects=int(max_objects),
        occlusion=float(occlusion),
        clutter=[c_lo, c_hi],
        context=None if context is None else float(context),
    )


def _params(
    num_train: int, num_val: int, num_test: int, image_size, seed: int, num_ooc: int = 0, **scene
) -> dict:
    """The checked parameters; the scene options and ``num_ooc`` only where they are not the default."""
    image_size = _image_size(image_size)
    counts = (int(num_train), int(num_val), int(num_test), int(num_ooc))
    if min(counts) < 0:
        raise ValueError(f"image counts must be >= 0, got {counts}")
    scene = _scene_options(**{**SCENE_DEFAULTS, **scene})
    if counts[3] and scene["context"] is None:
        raise ValueError("num_ooc > 0 needs context (the environments an out-of-context object is out of)")
    params = dict(
        num_train=counts[0], num_val=counts[1], num_test=counts[2], image_size=image_size, seed=int(seed)
    )
    if counts[3]:
        params["num_ooc"] = counts[3]
    params.update({k: v for k, v in scene.items() if v != SCENE_DEFAULTS[k]})
    return params


def _splits(params: dict) -> list[str]:
    return list(SPLITS) + ([OOC_SPLIT] if params.get("num_ooc", 0) else [])


def _manifest(params: dict) -> dict:
    return dict(
        format="bof-synthetic-voc",
        generator_version=GENERATOR_VERSION,
        params=params,
        class_names=list(SYNTHETIC_CLASSES),
        splits=_splits(params),
    )


def generate_synthetic_voc(
    out_dir: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 200,
    num_test: int = 200,
    image_size: tuple[int, int] = (224, 320),
    seed: int = 0,
    overwrite: bool = False,
    *,
    num_ooc: int = 0,
    **scene,
) -> Path:
    """Writes the synthetic dataset as a VOC year dir at ``out_dir`` and returns ``out_dir``.

    Read it with ``VOCDetection(out_dir.parent, [[out_dir.name, "train"]], SYNTHETIC_CLASSES)``.
    ``image_size``: (min, max) for the width and the height, each drawn uniformly per image, or
    ((w_min, w_max), (h_min, h_max)). ``num_ooc``: images of the out-of-context split ``ooc``; ``scene``:
    the scene options (:data:`SCENE_DEFAULTS`). An existing ``out_dir`` raises FileExistsError unless
    ``overwrite``.
    """
    out_dir = Path(out_dir)
    params = _params(num_train, num_val, num_test, image_size, seed, num_ooc, **scene)
    options = _scene_options(**{**SCENE_DEFAULTS, **scene})
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True to regenerate)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    counts = dict(zip(_splits(params), (num_train, num_val, num_test, num_ooc), strict=False))
    logger.info("generating synthetic VOC data in %s: %s", out_dir, params)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "JPEGImages").mkdir()
        (tmp / "Annotations").mkdir()
        (tmp / "ImageSets" / "Main").mkdir(parents=True)
        n_objects = n_difficult = 0
        with tqdm(total=sum(counts.values()), desc="synthetic VOC", unit="img", disable=None) as bar:
            for split_index, split in enumerate(counts):
                ids = []
                for i in range(counts[split]):
                    image_id = f"{split}_{i:06d}"
                    rng = np.random.default_rng([params["seed"], split_index, i])
                    image, objects = render_synthetic_image(
                        rng, params["image_size"], **_render_options(options, ooc=split == OOC_SPLIT)
                    )
                    Image.fromarray(image).save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
                    xml = annotation_xml(image_id, image.shape[1], image.shape[0], objects)
                    (tmp / "Annotations" / f"{image_id}.xml").write_text(xml)
                    ids.append(image_id)
                    n_objects += len(objects)
                    n_difficult += sum(o["difficult"] for o in objects)
                    bar.update()
                (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        manifest = _manifest(params)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _move_into_place(tmp, out_dir, manifest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "synthetic VOC data ready: %s (%d images, %d objects, %d difficult)",
        out_dir,
        sum(counts.values()),
        n_objects,
        n_difficult,
    )
    return out_dir


def _render_options(options: dict, ooc: bool) -> dict:
    """The renderer's keyword arguments for checked scene options: only those not at their default, so
    a default run calls the renderer exactly as before the options existed."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if v != SCENE_DEFAULTS[k]}
    return {**kwargs, "ooc": True} if ooc else kwargs


def _move_into_place(tmp: Path, out_dir: Path, manifest: dict, overwrite: bool) -> None:
    if overwrite and out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "data")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # Another process (e.g. another DDP rank) finished the same folder first: fine if identical.
        if _read_manifest(out_dir) != manifest:
            raise FileExistsError(f"{out_dir} appeared during generation with different contents") from None
        shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


DEFAULT_PARAMS = dict(
    num_train=800, num_val=200, num_test=200, image_size=(224, 320), seed=0, num_ooc=0, **SCENE_DEFAULTS
)


def _resolve(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise TypeError(f"unknown synthetic dataset parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    return _params(**{**DEFAULT_PARAMS, **params})


def synthetic_voc_name(**params) -> str:
    """The year-dir name ``synthetic-<hash>`` of a parameter set (keyword arguments of
    :func:`generate_synthetic_voc`, defaults applied; the hash also covers the generator version)."""
    manifest = _manifest(_resolve(params))
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:10]
    return f"synthetic-{digest}"


def ensure_synthetic_voc(cache_dir: str | os.PathLike, **params) -> Path:
    """Returns ``<cache_dir>/synthetic-<hash of params>/``, generating it first if missing.

    ``params``: the keyword arguments of :func:`generate_synthetic_voc` (defaults apply). Cheap when the
    folder exists (one small JSON read). The folder is a VOC year dir directly under ``cache_dir``::

        VOCDetection(cache_dir, [[path.name, "train"]], class_names=SYNTHETIC_CLASSES)
    """
    full = _resolve(params)
    out_dir = Path(cache_dir) / synthetic_voc_name(**full)
    if _read_manifest(out_dir) == _manifest(full):
        return out_dir
    if out_dir.exists():  # not a complete dataset of these params (should not happen): rebuild it
        logger.warning("%s exists but its manifest does not match; regenerating it", out_dir)
        return generate_synthetic_voc(out_dir, **full, overwrite=True)
    try:
        return generate_synthetic_voc(out_dir, **full)
    except FileExistsError:
        # Another process (e.g. another DDP rank) created it meanwhile; accept it once it is complete.
        if _read_manifest(out_dir) == _manifest(full):
            return out_dir
        raise


def synthetic_voc(
    cache_dir: str | os.PathLike, split: str, generator: dict | None = None, **checks
) -> VOCDetection:
    """The ``split`` (train, val, test or ooc) of the synthetic set made by ``generator`` params, generated on
    first use: what ``conf/data/synthetic.yaml`` instantiates. ``checks``: VOCDetection's
    ``on_bad_sample``, ``max_image_pixels``, ``check_images``."""
    year_dir = ensure_synthetic_voc(cache_dir, **dict(generator or {}))
    return VOCDetection(year_dir.parent, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES, **checks)


# start-up checks its data sets' arguments before anything is generated (bof.engine.run_setup)
synthetic_voc.check = VOCDetection.check

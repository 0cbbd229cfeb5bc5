"""Built-in synthetic detection dataset, written in the Pascal VOC layout (the demo default).

Why it exists: the demo must train and evaluate end to end on a laptop CPU in minutes with no download,
through exactly the same code path as real VOC (:class:`bof.data.voc.VOCDetection`, the VOC07 11-point
evaluator). So the generator writes a VOC "year dir"::

    <out_dir>/JPEGImages/<split>_<index:06d>.jpg
    <out_dir>/Annotations/<split>_<index:06d>.xml   real VOC XML: size, object/name/difficult/bndbox
    <out_dir>/ImageSets/Main/{train,val,test}.txt
    <out_dir>/manifest.json                          parameters and class names

Design choices
--------------
* **Classes** (:data:`SYNTHETIC_CLASSES`): six filled shapes (the ring is hollow), each with its own
  saturated base colour. Shape *and* colour both identify the class, so a small, briefly trained network
  reaches a clearly non-trivial mAP, while the tricks being reproduced (mixup, label smoothing, ...) still
  have something to act on: scale, occlusion, truncation and cluttered backgrounds. Colours are jittered
  per object (+-15 per channel and a mild shading gradient) but stay far apart between classes.
* **Objects**: 1 to 6 per image; the side is drawn log-uniformly from 5% to 60% of the shorter image
  side (so small objects are common, as in VOC) with a mild aspect jitter. Centres are drawn so that
  objects may be truncated by the image border. Later objects are drawn on top of earlier ones, so
  overlaps and occlusions happen.
* **Boxes** follow the VOC convention: the tight box of the object's *visible* pixels, 1-based
  inclusive integer coordinates.
* **Difficult**: visibility = visible pixels / pixels of the unoccluded, untruncated shape (computed
  from the masks of the later objects and the image border). An object is ``difficult`` when it is
  heavily hidden (visibility < 40%) or tiny (visible box side, geometric mean, < 5.5% of the shorter
  image side). Placements that would push an earlier object under 15% visibility are rejected (such an
  object would carry no signal), and placements that would make one newly heavily hidden are rejected
  most of the time, so difficult objects stay a few per cent. Anything still under 15% is dropped.
* **Backgrounds** are textured, not flat: per image a mix of low-frequency value noise and a linear
  gradient between two muted (low saturation) colours, often with soft sinusoidal stripes of a third
  muted colour, plus pixel noise. These contain no closed shapes and no saturated colours, so they can
  be confused with no class. Image width and height are each uniform in ``image_size``.
* **Determinism**: image ``i`` of split ``s`` uses ``np.random.default_rng([seed, s, i])``, so every
  image is independent of the others and of the split sizes; same parameters -> byte-identical files.
  Generation writes into a temporary sibling folder renamed into place at the end, so an interrupted
  run never leaves a half dataset where a complete one is expected (a hard kill may leave a hidden
  ``.<name>.tmp-*`` folder beside it, which is never read and can be deleted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from bof.data.coco import COCODetection
from bof.data.voc import VOCDetection

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
# Saturated, pairwise distant base colours (RGB), one per class, in SYNTHETIC_CLASSES order.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),  # circle: red
    (35, 60, 235),  # square: blue
    (40, 190, 60),  # triangle: green
    (235, 215, 30),  # cross: yellow
    (210, 50, 210),  # diamond: magenta
    (25, 215, 210),  # ring: cyan
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Bump when the generated images change, so cached datasets of older versions are not reused.
GENERATOR_VERSION = 1

MIN_REL_SIZE, MAX_REL_SIZE = 0.05, 0.60  # object side / shorter image side, drawn log-uniformly
MAX_OBJECTS = 6
DIFFICULT_VISIBILITY = 0.40  # less visible than this -> difficult
DROP_VISIBILITY = 0.15  # less visible than this -> avoided, and dropped if it happens anyway
DIFFICULT_REL_SIZE = 0.055  # visible box side (geometric mean) / shorter image side below this -> difficult
REJECT_NEW_DIFFICULT_P = 0.8  # probability to re-draw a placement that makes an object heavily hidden
PLACEMENT_ATTEMPTS = 8
JPEG_QUALITY = 90


def _muted_colour(rng: np.random.Generator, grey: float | None = None) -> np.ndarray:
    """A low-saturation colour: a grey level (random unless given) plus a small zero-mean tint (so that
    the channel mean stays the grey level)."""
    grey = rng.uniform(60, 195) if grey is None else grey
    tint = rng.uniform(-30, 30, size=3)
    return np.clip(grey + tint - tint.mean(), 0, 255).astype(np.float32)


def _smooth_upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small [gh, gw] grid to [h, w] as two interpolation matrices."""

    def weights(n_out: int, n_in: int) -> np.ndarray:
        pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
        lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
        frac = pos - lo
        m = np.zeros((n_out, n_in), np.float32)
        m[np.arange(n_out), lo] = 1 - frac
        m[np.arange(n_out), lo + 1] = frac
        return m

    return weights(h, grid.shape[0]) @ grid.astype(np.float32) @ weights(w, grid.shape[1]).T


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured float32 [h, w, 3] background in 0..255 (see the module docstring)."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    gh, gw = rng.integers(2, 7, size=2)
    noise = _smooth_upsample(rng.random((gh, gw), dtype=np.float32), h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = x * np.cos(angle) + y * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    mix = rng.uniform(0.2, 0.8)
    field = mix * noise + (1 - mix) * ramp
    field = ((field - field.min()) / max(float(np.ptp(field)), 1e-6))[..., None]  # full c0..c1 range
    # Two grey levels at least 45 apart so that no background is nearly flat.
    g0 = rng.uniform(60, 195)
    g1 = g0 + (-1.0 if g0 > 127.5 else 1.0) * rng.uniform(45, 90)
    c0, c1 = _muted_colour(rng, g0), _muted_colour(rng, g1)
    image = c0 * (1 - field) + c1 * field
    if rng.random() < 0.6:
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
        alpha = (rng.uniform(0.15, 0.5) * stripes)[..., None]
        image = image * (1 - alpha) + _muted_colour(rng) * alpha
    image += rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(2, 8)
    return image


def _shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """bool [h, w] mask of a class shape filling a w x h box."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    r, b = w - 1, h - 1
    if shape == "circle":
        draw.ellipse((0, 0, r, b), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, r, b), fill=255)
    elif shape == "triangle":
        draw.polygon([(0, b), (r, b), (r / 2, 0)], fill=255)
    elif shape == "cross":
        draw.rectangle((0, round(h / 3), r, round(2 * h / 3) - 1), fill=255)
        draw.rectangle((round(w / 3), 0, round(2 * w / 3) - 1, b), fill=255)
    elif shape == "diamond":
        draw.polygon([(r / 2, 0), (r, b / 2), (r / 2, b), (0, b / 2)], fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, r, b), outline=255, width=max(2, round(0.2 * min(w, h))))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(canvas) > 0


def render_synthetic_image(
    rng: np.random.Generator, image_size: tuple[int, int] = (224, 320)
) -> tuple[np.ndarray, list[dict]]:
    """Draws one image and its objects.

    Returns ``image`` uint8 [H, W, 3] RGB and a list of objects, each a dict with ``label`` (index into
    SYNTHETIC_CLASSES), ``box`` (VOC 1-based inclusive ints xmin, ymin, xmax, ymax of the visible
    pixels), ``difficult`` (bool), ``truncated`` (bool) and ``visibility`` (float in (0, 1]).
    """
    lo, hi = image_size
    w_img, h_img = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    side = min(w_img, h_img)
    image = _background(rng, h_img, w_img)

    objects: list[dict] = []  # in drawing order; "visible" is updated as later objects are placed
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(PLACEMENT_ATTEMPTS):
            label = int(rng.integers(len(SYNTHETIC_CLASSES)))
            size = side * math.exp(rng.uniform(math.log(MIN_REL_SIZE), math.log(MAX_REL_SIZE)))
            aspect = math.exp(rng.uniform(-0.25, 0.25))
            w, h = max(4, round(size * aspect)), max(4, round(size / aspect))
            # Centre kept so at least ~30% of the box side is inside: truncation happens, but moderately.
            cx = rng.uniform(0.3 * w, w_img - 0.3 * w)
            cy = rng.uniform(0.3 * h, h_img - 0.3 * h)
            x0, y0 = round(cx - w / 2), round(cy - h / 2)
            local = _shape_mask(SYNTHETIC_CLASSES[label], w, h)
            full_area = int(local.sum())
            mask = np.zeros((h_img, w_img), bool)
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, w_img), min(y0 + h, h_img)
            mask[iy0:iy1, ix0:ix1] = local[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
            in_image = int(mask.sum()) / full_area
            if in_image < 0.5:
                continue
            new_vis = [o["visible"] & ~mask for o in objects]
            fractions = [int(v.sum()) / o["full_area"] for v, o in zip(new_vis, objects, strict=True)]
            if any(f < DROP_VISIBILITY for f in fractions):
                continue
            newly_hidden = any(
                f < DIFFICULT_VISIBILITY <= o["visibility"] for f, o in zip(fractions, objects, strict=True)
            )
            if newly_hidden and rng.random() < REJECT_NEW_DIFFICULT_P:
                continue
            for o, v, f in zip(objects, new_vis, fractions, strict=True):
                o["visible"], o["visibility"] = v, f
            colour = np.asarray(CLASS_COLOURS[label], np.float32) + rng.uniform(-15, 15, size=3)
            objects.append(
                dict(
                    label=label,
                    own=mask,
                    visible=mask,
                    visibility=in_image,
                    full_area=full_area,
                    truncated=in_image < 1.0,
                    region=(ix0, iy0, ix1, iy1),
                    colour=colour,
                    shade=rng.uniform(0, 0.15),  # mild lighting gradient: +-15% at most
                    shade_angle=rng.uniform(0, 2 * np.pi),
                )
            )
            break

    for o in objects:  # paint in order: later objects occlude earlier ones
        ix0, iy0, ix1, iy1 = o["region"]
        m = o["own"][iy0:iy1, ix0:ix1]  # the whole shape: earlier objects are painted over
        yy, xx = np.mgrid[iy0:iy1, ix0:ix1].astype(np.float32)
        t = (xx - xx.mean()) * math.cos(o["shade_angle"]) + (yy - yy.mean()) * math.sin(o["shade_angle"])
        t /= max(float(np.abs(t).max()), 1.0)
        region = image[iy0:iy1, ix0:ix1]
        region[m] = (o["colour"][None, None, :] * (1 + o["shade"] * t[..., None]))[m]
    image += rng.standard_normal(image.shape, dtype=np.float32) * 2.0  # sensor noise over everything
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)

    out = []
    for o in objects:
        ys, xs = np.nonzero(o["visible"])
        if len(xs) == 0 or o["visibility"] < DROP_VISIBILITY:
            continue
        box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        box_side = math.sqrt((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
        difficult = o["visibility"] < DIFFICULT_VISIBILITY or box_side < DIFFICULT_REL_SIZE * side
        out.append(
            dict(
                label=o["label"],
                box=box,
                difficult=bool(difficult),
                truncated=bool(o["truncated"]),
                visibility=float(o["visibility"]),
            )
        )
    return image, out


def _annotation_xml(image_id: str, width: int, height: int, objects: list[dict]) -> str:
    parts = [
        "<annotation>\n",
        "\t<folder>synthetic</folder>\n",  # constant: files must not depend on where they are written
        f"\t<filename>{image_id}.jpg</filename>\n",
        "\t<source>\n\t\t<database>bof synthetic shapes</database>\n\t</source>\n",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n",
        "\t<segmented>0</segmented>\n",
    ]
    for o in objects:
        xmin, ymin, xmax, ymax = o["box"]
        parts.append(
            "\t<object>\n"
            f"\t\t<name>{SYNTHETIC_CLASSES[o['label']]}</name>\n"
            "\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>{int(o['truncated'])}</truncated>\n"
            f"\t\t<difficult>{int(o['difficult'])}</difficult>\n"
            "\t\t<bndbox>\n"
            f"\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n"
            "\t\t</bndbox>\n"
            "\t</object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def _params(num_train: int, num_val: int, num_test: int, image_size, seed: int) -> dict:
    lo, hi = (int(v) for v in image_size)
    if not 16 <= lo <= hi:
        raise ValueError(f"image_size must be (min, max) with 16 <= min <= max, got {tuple(image_size)}")
    counts = (int(num_train), int(num_val), int(num_test))
    if min(counts) < 0:
        raise ValueError(f"image counts must be >= 0, got {counts}")
    return dict(
        num_train=counts[0], num_val=counts[1], num_test=counts[2], image_size=[lo, hi], seed=int(seed)
    )


def _manifest(params: dict) -> dict:
    return dict(
        format="bof-synthetic-voc",
        generator_version=GENERATOR_VERSION,
        params=params,
        class_names=list(SYNTHETIC_CLASSES),
        splits=list(SPLITS),
    )


def generate_synthetic_voc(
    out_dir: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 200,
    num_test: int = 200,
    image_size: tuple[int, int] = (224, 320),
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Writes the synthetic dataset as a VOC year dir at ``out_dir`` and returns ``out_dir``.

    Read it with ``VOCDetection(out_dir.parent, [[out_dir.name, "train"]], SYNTHETIC_CLASSES)``.
    ``image_size``: (min, max) for the width and the height, each drawn uniformly per image.
    An existing ``out_dir`` raises FileExistsError unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    params = _params(num_train, num_val, num_test, image_size, seed)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True to regenerate)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    counts = dict(zip(SPLITS, (num_train, num_val, num_test), strict=True))
    logger.info("generating synthetic VOC data in %s: %s", out_dir, params)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "JPEGImages").mkdir()
        (tmp / "Annotations").mkdir()
        (tmp / "ImageSets" / "Main").mkdir(parents=True)
        n_objects = n_difficult = 0
        with tqdm(total=sum(counts.values()), desc="synthetic VOC", unit="img", disable=None) as bar:
            for split_index, split in enumerate(SPLITS):
                ids = []
                for i in range(counts[split]):
                    image_id = f"{split}_{i:06d}"
                    rng = np.random.default_rng([params["seed"], split_index, i])
                    image, objects = render_synthetic_image(rng, tuple(params["image_size"]))
                    Image.fromarray(image).save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
                    xml = _annotation_xml(image_id, image.shape[1], image.shape[0], objects)
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


DEFAULT_PARAMS = dict(num_train=800, num_val=200, num_test=200, image_size=(224, 320), seed=0)


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
    cache_dir: str | os.PathLike, split: str, generator: dict | None = None, on_bad_sample: str = "error"
) -> VOCDetection:
    """The ``split`` (train, val or test) of the synthetic set made by ``generator`` params, generated on
    first use: what ``conf/data/synthetic.yaml`` instantiates."""
    year_dir = ensure_synthetic_voc(cache_dir, **dict(generator or {}))
    return VOCDetection(
        year_dir.parent, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES, on_bad_sample=on_bad_sample
    )


def synthetic_coco(
    cache_dir: str | os.PathLike,
    split: str,
    generator: dict | None = None,
    train: bool = True,
    on_bad_sample: str = "error",
    eval_backend: str = "pycocotools",
) -> COCODetection:
    """The same synthetic images in the COCO layout: what ``conf/data/synthetic_coco.yaml`` instantiates,
    so the COCO loader and COCOeval run end to end on a CPU. The instances JSON is written once beside
    the VOC files (``coco/instances_<split>.json``, category ids 1..6); VOC's ``difficult`` flag has no
    COCO counterpart, so those objects are ordinary boxes here."""
    year_dir = ensure_synthetic_voc(cache_dir, **dict(generator or {}))
    annotation_file = year_dir / "coco" / f"instances_{split}.json"
    if not annotation_file.is_file():
        voc = VOCDetection(year_dir.parent, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES)
        _write_atomically(annotation_file, json.dumps(voc_as_coco(voc)))
    return COCODetection(
        year_dir, split, train=train, annotation_file=annotation_file, image_dir=year_dir / "JPEGImages",
        on_bad_sample=on_bad_sample, eval_backend=eval_backend,
    )  # fmt: skip


def voc_as_coco(voc: VOCDetection) -> dict:
    """A VOCDetection's annotations as a COCO instances dict (VOC 1-based inclusive boxes -> xywh)."""
    images, annotations = [], []
    for index, image_id in enumerate(voc.image_ids):
        ann = voc.get_annotation(index)
        images.append(
            {"id": index + 1, "file_name": f"{image_id}.jpg", "width": ann.width, "height": ann.height}
        )
        for box, label in zip(ann.boxes.tolist(), ann.labels.tolist(), strict=True):
            x1, y1, w, h = box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(voc.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

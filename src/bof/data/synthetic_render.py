"""Rendering of the built-in synthetic detection data set: images of shapes and their VOC XML.

Storage, caching and the data sets built on these pictures are :mod:`bof.data.synthetic`.

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
* **Backgrounds** and the **scene options** (environments, clutter, occlusion):
  :mod:`bof.data.synthetic_scene`.
* **Determinism**: a picture is a pure function of the generator passed in (the storage seeds one
  per image).

Scene options: keyword arguments of :func:`render_synthetic_image`, all off by default (with the defaults
the random stream, and so every picture, is exactly the first generator's); what each one does is
:mod:`bof.data.synthetic_scene`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from bof.data.synthetic_scene import (
    CLUTTER_REL_SIZE,
    CLUTTER_SATURATED_P,
    CLUTTER_SHAPES,
    ENVIRONMENTS,
    HOME_CLASSES,
    background,
    clutter_mask,
    muted_colour,
    near_edge,
)

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

MIN_REL_SIZE, MAX_REL_SIZE = 0.05, 0.60  # object side / shorter image side, drawn log-uniformly
MAX_OBJECTS = 6
DIFFICULT_VISIBILITY = 0.40  # less visible than this -> difficult
DROP_VISIBILITY = 0.15  # less visible than this -> avoided, and dropped if it happens anyway
DIFFICULT_REL_SIZE = 0.055  # visible box side (geometric mean) / shorter image side below this -> difficult
REJECT_NEW_DIFFICULT_P = 0.8  # probability to re-draw a placement that makes an object heavily hidden
PLACEMENT_ATTEMPTS = 8
JPEG_QUALITY = 90


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


def _clip_to_image(local: np.ndarray, x0: int, y0: int, w_img: int, h_img: int):
    """The part of a local mask placed at (x0, y0) that lies in the image: (region, mask of it)."""
    h, w = local.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, w_img), min(y0 + h, h_img)
    return (ix0, iy0, ix1, iy1), local[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]


def _paint(image: np.ndarray, region, m: np.ndarray, colour: np.ndarray, shade: float, angle: float) -> None:
    """Paints ``colour`` with a mild linear lighting gradient into ``image[region]`` where ``m``."""
    ix0, iy0, ix1, iy1 = region
    if ix1 <= ix0 or iy1 <= iy0:
        return
    yy, xx = np.mgrid[iy0:iy1, ix0:ix1].astype(np.float32)
    t = (xx - xx.mean()) * math.cos(angle) + (yy - yy.mean()) * math.sin(angle)
    t /= max(float(np.abs(t).max()), 1.0)
    target = image[iy0:iy1, ix0:ix1]
    target[m] = (colour[None, None, :] * (1 + shade * t[..., None]))[m]


def _draw_label(rng: np.random.Generator, env: int | None, context: float | None, ooc: bool) -> int:
    """An object's class: uniform (no environment), else see the module docstring (context, ooc)."""
    if env is None:
        return int(rng.integers(len(SYNTHETIC_CLASSES)))
    home = HOME_CLASSES[env]
    if ooc:
        away = [c for c in range(len(SYNTHETIC_CLASSES)) if c not in home]
        return away[int(rng.integers(len(away)))]
    if rng.random() < context:
        return home[int(rng.integers(len(home)))]
    return int(rng.integers(len(SYNTHETIC_CLASSES)))


def render_synthetic_image(
    rng: np.random.Generator,
    image_size=(224, 320),
    *,
    object_scale: tuple[float, float] = (MIN_REL_SIZE, MAX_REL_SIZE),
    max_objects: int = MAX_OBJECTS,
    occlusion: float = 0.0,
    clutter: tuple[int, int] = (0, 0),
    context: float | None = None,
    ooc: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """Draws one image and its objects; ``image_size``: (min, max) for both sides, or
    ((w_min, w_max), (h_min, h_max)). The scene options (``object_scale`` ... ``ooc``) are the module
    docstring's; their defaults draw exactly the pictures of a renderer without them.

    Returns ``image`` uint8 [H, W, 3] RGB and a list of objects, each a dict with ``label`` (index into
    SYNTHETIC_CLASSES), ``box`` (VOC 1-based inclusive ints xmin, ymin, xmax, ymax of the visible
    pixels), ``difficult`` (bool), ``truncated`` (bool) and ``visibility`` (float in (0, 1]); with
    ``context`` or ``ooc`` each object also has ``environment`` (index into ENVIRONMENTS).
    """
    if isinstance(image_size[0], (list, tuple)):  # ((w_min, w_max), (h_min, h_max))
        (w_lo, w_hi), (h_lo, h_hi) = image_size
        w_img, h_img = (int(v) for v in rng.integers((w_lo, h_lo), (w_hi + 1, h_hi + 1)))
    else:
        lo, hi = image_size
        w_img, h_img = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    if ooc and context is None:
        context = 0.0  # the environments are needed; no class is drawn at home anyway
    side = min(w_img, h_img)
    env = None if context is None else int(rng.integers(len(ENVIRONMENTS)))
    image = background(rng, h_img, w_img, env)
    log_lo, log_hi = math.log(object_scale[0]), math.log(object_scale[1])

    objects: list[dict] = []  # in drawing order; "visible" is updated as later objects are placed
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(PLACEMENT_ATTEMPTS):
            label = _draw_label(rng, env, context, ooc)
            size = side * math.exp(rng.uniform(log_lo, log_hi))
            aspect = math.exp(rng.uniform(-0.25, 0.25))
            w, h = max(4, round(size * aspect)), max(4, round(size / aspect))
            if occlusion > 0 and objects and rng.random() < occlusion:
                # over the edge of an already placed object: it is partly hidden by this one
                cx, cy = near_edge(rng, objects[int(rng.integers(len(objects)))]["full_box"], w, h)
                cx = min(max(cx, 0.3 * w), w_img - 0.3 * w)
                cy = min(max(cy, 0.3 * h), h_img - 0.3 * h)
            else:
                # Centre kept so at least ~30% of the box side is inside: truncation happens, but moderately.
                cx = rng.uniform(0.3 * w, w_img - 0.3 * w)
                cy = rng.uniform(0.3 * h, h_img - 0.3 * h)
            x0, y0 = round(cx - w / 2), round(cy - h / 2)
            local = _shape_mask(SYNTHETIC_CLASSES[label], w, h)
            full_area = int(local.sum())
            mask = np.zeros((h_img, w_img), bool)
            region, inside = _clip_to_image(local, x0, y0, w_img, h_img)
            ix0, iy0, ix1, iy1 = region
            mask[iy0:iy1, ix0:ix1] = inside
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
                    region=region,
                    full_box=(x0, y0, w, h),
                    colour=colour,
                    shade=rng.uniform(0, 0.15),  # mild lighting gradient: +-15% at most
                    shade_angle=rng.uniform(0, 2 * np.pi),
                )
            )
            break

    # Distractors are drawn from the generator after the objects, so that turning clutter on keeps the
    # objects of an image; they are painted first, behind the objects.
    for _ in range(int(rng.integers(clutter[0], clutter[1] + 1)) if clutter[1] > 0 else 0):
        shape = CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))]
        size = side * math.exp(rng.uniform(math.log(CLUTTER_REL_SIZE[0]), math.log(CLUTTER_REL_SIZE[1])))
        aspect = math.exp(rng.uniform(-0.25, 0.25))
        w, h = max(6, round(size * aspect)), max(6, round(size / aspect))
        angle = rng.uniform(0, 2 * np.pi)
        x0, y0 = round(rng.uniform(0, w_img) - w / 2), round(rng.uniform(0, h_img) - h / 2)
        if rng.random() < CLUTTER_SATURATED_P:  # a class's colour on a shape of no class
            colour = np.asarray(CLASS_COLOURS[int(rng.integers(len(CLASS_COLOURS)))], np.float32)
            colour = colour + rng.uniform(-15, 15, size=3)
        else:
            colour = muted_colour(rng)
        region, m = _clip_to_image(clutter_mask(shape, w, h, angle), x0, y0, w_img, h_img)
        _paint(image, region, m, colour, rng.uniform(0, 0.15), rng.uniform(0, 2 * np.pi))

    for o in objects:  # paint in order: later objects occlude earlier ones
        ix0, iy0, ix1, iy1 = o["region"]
        m = o["own"][iy0:iy1, ix0:ix1]  # the whole shape: earlier objects are painted over
        _paint(image, o["region"], m, o["colour"], o["shade"], o["shade_angle"])
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
        if env is not None:
            out[-1]["environment"] = env
    return image, out


def annotation_xml(image_id: str, width: int, height: int, objects: list[dict]) -> str:
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

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
* **Backgrounds** are textured, not flat: per image a mix of low-frequency value noise and a linear
  gradient between two muted (low saturation) colours, often with soft sinusoidal stripes of a third
  muted colour, plus pixel noise. These contain no closed shapes and no saturated colours, so they can
  be confused with no class. Image width and height are each uniform in ``image_size``.
* **Determinism**: a picture is a pure function of the generator passed in (the storage seeds one
  per image).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

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


def render_synthetic_image(rng: np.random.Generator, image_size=(224, 320)) -> tuple[np.ndarray, list[dict]]:
    """Draws one image and its objects; ``image_size``: (min, max) for both sides, or
    ((w_min, w_max), (h_min, h_max)).

    Returns ``image`` uint8 [H, W, 3] RGB and a list of objects, each a dict with ``label`` (index into
    SYNTHETIC_CLASSES), ``box`` (VOC 1-based inclusive ints xmin, ymin, xmax, ymax of the visible
    pixels), ``difficult`` (bool), ``truncated`` (bool) and ``visibility`` (float in (0, 1]).
    """
    if isinstance(image_size[0], (list, tuple)):  # ((w_min, w_max), (h_min, h_max))
        (w_lo, w_hi), (h_lo, h_hi) = image_size
        w_img, h_img = (int(v) for v in rng.integers((w_lo, h_lo), (w_hi + 1, h_hi + 1)))
    else:
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

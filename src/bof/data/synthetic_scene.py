"""What surrounds the objects of a synthetic scene: its background, and the scene options of
:func:`bof.data.synthetic_render.render_synthetic_image` (environments, clutter shapes, the placement
that makes occlusion).

* **Backgrounds** are textured, not flat: per image a mix of low-frequency value noise and a linear
  gradient between two muted (low saturation) colours, often with soft sinusoidal stripes of a third
  muted colour, plus pixel noise. These contain no closed shapes and no saturated colours, so they can
  be confused with no class. Image width and height are each uniform in ``image_size``.

Scene options (keyword arguments of ``render_synthetic_image``, all off by default; with the defaults the
random stream and so every picture is exactly the first generator's). They make the scenes harder where
the paper's motivation needs them:

* ``object_scale=(min, max)``: the object side range, drawn log-uniformly (default 0.05..0.60): a wide
  range such as (0.04, 0.9) asks for robustness to scale, what random shapes training is for.
* ``max_objects``: at most this many objects (default 6): crowded scenes.
* ``occlusion=p``: with probability p a placement puts the new object's centre near the box edge of an
  already placed one, so it partly hides it (the usual visibility, difficult and drop rules still
  apply): partial occlusion and overlap, as in real photographs, where the default's random placement
  rarely produces it.
* ``clutter=(min, max)``: that many unannotated distractors per image, of shapes that are no class's
  (:data:`CLUTTER_SHAPES`: five-point star, crescent, 'T', arrow, hexagon outline), half in muted colours
  and half in a class's saturated colour, drawn behind the objects: a detector must use shape, not
  colour alone, and learn a background class that is not just "muted".
* ``context=p``: scene environments (:data:`ENVIRONMENTS`, three background families of clearly
  different muted palettes), each the home of two classes (:data:`HOME_CLASSES`); an image draws its
  environment, then each object's class is its environment's home class with probability p, else any
  class (uniform over all six, so a fraction p + (1 - p) / 3 of objects are at home). Objects then
  come with their usual context, as in real photographs, which is what mixup's "elephant in the room"
  motivation is about.
* ``ooc=True``: "out of context", every object's class is drawn from the four classes *not* at home in
  the image's environment (the ``ooc`` split of :mod:`bof.data.synthetic`).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

# Environments: background families of muted colours, each a hue range (degrees of the RGB tint) and a
# grey-level range of its two background colours; tints are small (amplitude 10..22 grey levels), so the
# backgrounds stay low-saturation and never look like a class colour.
ENVIRONMENTS: tuple[dict, ...] = (
    dict(name="cool", hue=(195.0, 235.0), grey=(80.0, 190.0)),  # blue-grey: water, sky, steel
    dict(name="green-brown", hue=(55.0, 120.0), grey=(55.0, 140.0)),  # olive to green, darker: fields
    dict(name="warm", hue=(5.0, 35.0), grey=(105.0, 200.0)),  # warm grey to brown, lighter: rooms, sand
)
# The two home classes of each environment (indices into SYNTHETIC_CLASSES), in ENVIRONMENTS order:
# cool: circle, square; green-brown: triangle, cross; warm: diamond, ring.
HOME_CLASSES: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5))
ENV_TINT = (10.0, 22.0)  # amplitude range of an environment colour's tint, in grey levels
# Distractor shapes: none is a class's (no ellipse, rectangle, triangle, cross, diamond or ring).
CLUTTER_SHAPES: tuple[str, ...] = ("star", "crescent", "tee", "arrow", "hexagon")
CLUTTER_REL_SIZE = (0.06, 0.35)  # distractor side / shorter image side, drawn log-uniformly
CLUTTER_SATURATED_P = 0.5  # probability that a distractor takes a class's saturated colour
OCCLUSION_JITTER = 0.25  # an occluder's centre: a point of the occluded box's edge +- this x its own side


def muted_colour(rng: np.random.Generator, grey: float | None = None) -> np.ndarray:
    """A low-saturation colour: a grey level (random unless given) plus a small zero-mean tint (so that
    the channel mean stays the grey level)."""
    grey = rng.uniform(60, 195) if grey is None else grey
    tint = rng.uniform(-30, 30, size=3)
    return np.clip(grey + tint - tint.mean(), 0, 255).astype(np.float32)


def env_colour(rng: np.random.Generator, env: int, grey: float | None = None) -> np.ndarray:
    """A muted colour of environment ``env``: a grey level (random in its range unless given) plus a
    zero-mean tint of the environment's hue."""
    e = ENVIRONMENTS[env]
    grey = rng.uniform(*e["grey"]) if grey is None else grey
    hue = math.radians(rng.uniform(*e["hue"]))
    tint = rng.uniform(*ENV_TINT) * np.cos(hue - np.radians([0.0, 120.0, 240.0]))
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def smooth_upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
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


def background(rng: np.random.Generator, h: int, w: int, env: int | None = None) -> np.ndarray:
    """Textured float32 [h, w, 3] background in 0..255 (see the module docstring); ``env``: the colours
    of that environment (None: any muted colours)."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    gh, gw = rng.integers(2, 7, size=2)
    noise = smooth_upsample(rng.random((gh, gw), dtype=np.float32), h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = x * np.cos(angle) + y * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    mix = rng.uniform(0.2, 0.8)
    field = mix * noise + (1 - mix) * ramp
    field = ((field - field.min()) / max(float(np.ptp(field)), 1e-6))[..., None]  # full c0..c1 range
    # Two grey levels at least 45 apart so that no background is nearly flat.
    if env is None:
        muted = muted_colour
        g0 = rng.uniform(60, 195)
    else:
        muted = lambda rng, grey=None: env_colour(rng, env, grey)  # noqa: E731
        g0 = rng.uniform(*ENVIRONMENTS[env]["grey"])
    pivot = 127.5 if env is None else sum(ENVIRONMENTS[env]["grey"]) / 2
    g1 = g0 + (-1.0 if g0 > pivot else 1.0) * rng.uniform(45, 90)
    if env is not None:
        g1 = min(max(g1, 30.0), 225.0)
    c0, c1 = muted(rng, g0), muted(rng, g1)
    image = c0 * (1 - field) + c1 * field
    if rng.random() < 0.6:
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
        alpha = (rng.uniform(0.15, 0.5) * stripes)[..., None]
        image = image * (1 - alpha) + muted(rng) * alpha
    image += rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(2, 8)
    return image


def polygon(points: list[tuple[float, float]], w: int, h: int, angle: float) -> list[tuple[float, float]]:
    """Points of the unit disc (x right, y down), rotated by ``angle`` and stretched onto a w x h box."""
    c, s = math.cos(angle), math.sin(angle)
    rx, ry = (w - 1) / 2, (h - 1) / 2
    return [(rx + (x * c - y * s) * rx, ry + (x * s + y * c) * ry) for x, y in points]


_STAR = [
    (
        (1.0 if k % 2 == 0 else 0.4) * math.sin(k * math.pi / 5),
        -(1.0 if k % 2 == 0 else 0.4) * math.cos(k * math.pi / 5),
    )
    for k in range(10)
]
_TEE = [
    (-0.7, -0.7),
    (0.7, -0.7),
    (0.7, -0.3),
    (0.2, -0.3),
    (0.2, 0.7),
    (-0.2, 0.7),
    (-0.2, -0.3),
    (-0.7, -0.3),
]
_ARROW = [(-0.8, -0.18), (0.1, -0.18), (0.1, -0.55), (0.8, 0.0), (0.1, 0.55), (0.1, 0.18), (-0.8, 0.18)]
_HEXAGON = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]


def clutter_mask(shape: str, w: int, h: int, angle: float) -> np.ndarray:
    """bool [h, w] mask of a distractor shape (:data:`CLUTTER_SHAPES`) rotated by ``angle`` in a w x h
    box."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "star":
        draw.polygon(polygon(_STAR, w, h, angle), fill=255)
    elif shape == "tee":
        draw.polygon(polygon(_TEE, w, h, angle), fill=255)
    elif shape == "arrow":
        draw.polygon(polygon(_ARROW, w, h, angle), fill=255)
    elif shape == "hexagon":  # an outline, thinner than the ring's
        draw.polygon(polygon(_HEXAGON, w, h, angle), fill=255)
        draw.polygon(polygon([(0.72 * x, 0.72 * y) for x, y in _HEXAGON], w, h, angle), fill=0)
    elif shape == "crescent":  # a disc minus the same disc shifted by 40% of the box along angle
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
        dx, dy = 0.4 * w * math.cos(angle), 0.4 * h * math.sin(angle)
        draw.ellipse((dx, dy, w - 1 + dx, h - 1 + dy), fill=0)
    else:
        raise ValueError(f"unknown clutter shape {shape!r}")
    return np.asarray(canvas) > 0


def near_edge(
    rng: np.random.Generator, box: tuple[int, int, int, int], w: int, h: int
) -> tuple[float, float]:
    """A centre for a w x h object that partly overlaps the object in ``box`` (x0, y0, w, h): a random
    point of the edge of the box shrunk to 70% about its centre (so mostly on the shape itself, which
    need not fill its box), jittered by up to OCCLUSION_JITTER of the new object's own side."""
    bx, by, bw, bh = box
    bx, by, bw, bh = bx + 0.15 * bw, by + 0.15 * bh, 0.7 * bw, 0.7 * bh
    side, t = int(rng.integers(4)), rng.uniform(0, 1)
    if side < 2:  # top or bottom edge
        px, py = bx + t * bw, by + side * bh
    else:  # left or right edge
        px, py = bx + (side - 2) * bw, by + t * bh
    jx, jy = rng.uniform(-OCCLUSION_JITTER, OCCLUSION_JITTER, size=2)
    return px + jx * w, py + jy * h

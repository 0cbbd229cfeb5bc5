"""Draws the synthetic generator's scene options as one picture (docs/images/synthetic_options.png).

Rows: today's default scenes, each option alone, all options on, and the out-of-context split; columns:
the same image seeds in every row (clutter alone keeps each image's objects, as the generator draws
distractors after them). Annotated boxes are outlined in white, so unannotated distractors show as shapes
without a box. Pure rendering (bof.data.synthetic_render), no files but the picture.

    python scripts/draw_synthetic.py --out docs/images/synthetic_options.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bof.data.synthetic_render import render_synthetic_image
from bof.data.synthetic_scene import ENVIRONMENTS

ALL_ON = dict(object_scale=(0.04, 0.9), max_objects=10, occlusion=0.5, clutter=(3, 8), context=0.8)
# (row title, scene options, split index: 0 train, 3 ooc, as bof.data.synthetic seeds them)
ROWS: tuple[tuple[str, dict, int], ...] = (
    ("default", {}, 0),
    ("object_scale\n[0.04, 0.9]", dict(object_scale=(0.04, 0.9)), 0),
    ("max_objects 10", dict(max_objects=10), 0),
    ("occlusion 0.5", dict(occlusion=0.5), 0),
    ("clutter [3, 8]", dict(clutter=(3, 8)), 0),
    ("context 0.8", dict(context=0.8), 0),
    ("all options on", ALL_ON, 0),
    ("ooc split\n(all on)", {**ALL_ON, "ooc": True}, 3),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/images/synthetic_options.png", help="the PNG to write")
    parser.add_argument("--columns", type=int, default=5, help="images per row")
    parser.add_argument("--cell", type=int, default=128, help="side of one image in the picture, pixels")
    parser.add_argument("--seed", type=int, default=0, help="the generator seed (data.generator.seed)")
    return parser.parse_args(argv)


def cell(options: dict, split_index: int, seed: int, index: int, size: int) -> Image.Image:
    """One rendered image, its annotated boxes outlined, scaled to fit a size x size cell."""
    rng = np.random.default_rng([seed, split_index, index])
    array, objects = render_synthetic_image(rng, (224, 320), **options)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    for o in objects:
        x1, y1, x2, y2 = (v - 1 for v in o["box"])
        draw.rectangle((x1, y1, x2, y2), outline=(255, 255, 255), width=2)
    scale = size / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    if objects and "environment" in objects[0]:
        name = ENVIRONMENTS[objects[0]["environment"]]["name"]
        ImageDraw.Draw(image).text((3, 2), name, fill=(255, 255, 255))
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    label_width, gap = 110, 4
    pitch = args.cell + gap
    grid = Image.new("RGB", (label_width + args.columns * pitch, len(ROWS) * pitch), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (title, options, split_index) in enumerate(ROWS):
        draw.multiline_text((4, r * pitch + args.cell // 2 - 10), title, fill=(0, 0, 0))
        for c in range(args.columns):
            image = cell(options, split_index, args.seed, c, args.cell)
            grid.paste(image, (label_width + c * pitch, r * pitch))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours: the sensor noise makes a true-colour PNG of this grid several times larger
    grid.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

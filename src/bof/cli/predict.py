"""bof-predict: a trained detector on image files; writes each image with its detections drawn, and
detections.json in the COCO results format (boxes in each image's own pixels).

    bof-predict checkpoint=run/best.pt input=photos/ output=predictions/
    bof-predict checkpoint=run/best.pt input='photos/*.jpg' output=out score_thresh=0.5 batch_size=16
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import torch
from torchvision.io import write_jpeg
from torchvision.ops import box_convert
from tqdm import tqdm

from bof.cli.args import parse_key_values, setup_logging
from bof.data.bad_samples import BadSampleError
from bof.data.decode import MAX_IMAGE_PIXELS, decode_rgb
from bof.engine.build_model import load_trained
from bof.engine.loops import prepare_batch
from bof.engine.run_setup import autocast_dtype, pick_device
from bof.tricks.augment import Resize
from bof.utils.atomic import write_text_atomically
from bof.utils.drawing import draw_detections

log = logging.getLogger("bof.cli.predict")
USAGE = __doc__.strip()
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def image_files(spec: str) -> list[Path]:
    """A file, every image in a folder (sorted), or a glob's images; none found is an error naming it."""
    path = Path(spec)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(
            Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES
        )
    if not files:
        raise SystemExit(f"input={spec}: no image files there (a file, a folder or a glob of .jpg/.png/...)")
    return files


def drawing_names(files: list[Path]) -> dict[Path, str]:
    """Each input's drawing: ``<stem>.jpg``, or ``<stem>_<suffix>.jpg`` when inputs share a stem
    (``a.jpg``, ``a.png``), so no drawing overwrites another."""
    stems = Counter(f.stem for f in files)
    return {
        f: f"{f.stem}.jpg" if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.')}.jpg" for f in files
    }


def predict(
    checkpoint: str,
    inputs: str,
    output: str,
    overrides: list[str],
    score_thresh: float = 0.3,
    batch_size: int = 8,
) -> list[dict]:
    """Detections of every input image, drawn into ``output`` and listed in ``output``/detections.json."""
    device_name = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.device=")), "auto")
    device = pick_device(device_name)
    cfg, model, stored = load_trained(checkpoint, overrides, device)
    class_names = stored["class_names"]
    amp, size, resize = autocast_dtype(cfg.trainer.amp, device), cfg.model.val_size, Resize()
    files, out_dir = image_files(inputs), Path(output)
    if any(f.resolve().parent == out_dir.resolve() for f in files):
        raise SystemExit(
            f"output={output} holds input images, which the drawings would overwrite: choose another"
        )
    drawings = drawing_names(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, unreadable = [], []
    max_pixels = cfg.data.get("max_image_pixels", MAX_IMAGE_PIXELS)
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        batch, originals = [], []
        for file in files[start : start + batch_size]:
            try:  # a file that is not an image, or too large, is said and skipped: the others go on
                originals.append(decode_rgb(file, max_pixels))
                batch.append(file)
            except BadSampleError as error:
                log.warning("skipping %s", error)
                unreadable.append(str(file))
        if not batch:
            continue
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
        inputs_u8 = [resize(image, empty, size)[0] for image in originals]
        images, _ = prepare_batch(torch.stack(inputs_u8) if size else inputs_u8, [], device, False)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            detections = model(images)
        for file, original, network_input, det in zip(batch, originals, inputs_u8, detections, strict=True):
            (height, width), (size_h, size_w) = original.shape[-2:], network_input.shape[-2:]
            scale = torch.tensor([width / size_w, height / size_h] * 2, device=det["boxes"].device)
            det = {
                "boxes": (det["boxes"] * scale).float().cpu(),
                "scores": det["scores"].float().cpu(),
                "labels": det["labels"].cpu(),
            }
            drawn = draw_detections(original, det, empty, class_names, score_thresh)
            write_jpeg(drawn, str(out_dir / drawings[file]), quality=90)
            keep = det["scores"] >= score_thresh
            boxes = box_convert(det["boxes"][keep], "xyxy", "xywh").tolist()
            for box, score, label in zip(
                boxes, det["scores"][keep].tolist(), det["labels"][keep].tolist(), strict=True
            ):
                results.append(
                    {
                        "image_id": str(file),
                        "category_id": label + 1,
                        "category": class_names[label],
                        "bbox": [round(v, 2) for v in box],
                        "score": round(score, 5),
                    }
                )
    write_text_atomically(out_dir / "detections.json", json.dumps(results))
    log.info(
        "%d detections in %d images -> %s (drawn) and %s%s",
        len(results),
        len(files) - len(unreadable),
        out_dir,
        out_dir / "detections.json",
        f"; {len(unreadable)} unreadable files skipped: {unreadable[:5]}" if unreadable else "",
    )
    return results


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    own, overrides = parse_key_values(
        sys.argv[1:] if argv is None else argv,
        {"checkpoint": ..., "input": ..., "output": "predictions", "score_thresh": "0.3", "batch_size": "8"},
        USAGE,
    )
    try:
        score_thresh, batch_size = float(own["score_thresh"]), int(own["batch_size"])
    except ValueError:
        raise SystemExit(
            f"score_thresh={own['score_thresh']} must be a number, batch_size={own['batch_size']} a whole one"
        ) from None
    if not 0 <= score_thresh <= 1 or batch_size < 1:
        raise SystemExit(f"score_thresh={score_thresh} must be in [0, 1] and batch_size={batch_size} >= 1")
    with torch.inference_mode():
        predict(own["checkpoint"], own["input"], own["output"], overrides, score_thresh, batch_size)


if __name__ == "__main__":
    main()

"""VOC result files: the official format, one file per class ``<prefix><class>.txt`` with lines
``image_id score x1 y1 x2 y2`` (VOC box convention), written and read; and the per-class AP table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bof.utils.atomic import write_text_atomically

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "comp4_det_test_"


class ClassDetections(NamedTuple):
    """The detections of one class, column-wise (as read from one result file).

    ``image_ids``: list[str] of length M; ``scores``: float64 [M]; ``boxes``: float64 [M, 4] VOC boxes.
    """

    image_ids: list[str]
    scores: np.ndarray
    boxes: np.ndarray


def write_result_files(
    out_dir: str | os.PathLike, detections: dict[str, ClassDetections], prefix: str = DEFAULT_PREFIX
) -> list[Path]:
    """Writes one result file per class (empty if no detections), creating ``out_dir``:
    ``<out_dir>/<prefix><class>.txt`` (score with 6 decimals, VOC box coordinates with 1 decimal).
    Returns the paths in class order."""
    paths = []
    for name, dets in detections.items():
        lines = [
            f"{i} {s:.6f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n"
            for i, s, b in zip(dets.image_ids, dets.scores.tolist(), dets.boxes.tolist(), strict=True)
        ]
        paths.append(write_text_atomically(Path(out_dir) / f"{prefix}{name}.txt", "".join(lines)))
    return paths


def read_result_files(
    results_dir: str | os.PathLike, class_names: Sequence[str], prefix: str = DEFAULT_PREFIX
) -> dict[str, ClassDetections]:
    """Reads official result files ``<results_dir>/<prefix><class>.txt`` (lines ``image_id score x1 y1
    x2 y2``, VOC boxes).

    Returns ``{class_name: ClassDetections}`` for every class. A missing class file means no detections
    for that class (a warning is logged). Raises FileNotFoundError if ``results_dir`` does not exist or
    holds none of the files (most likely a wrong directory or prefix), ValueError on a malformed line.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory not found: {results_dir}")
    out, missing = {}, []
    for name in class_names:
        path = results_dir / f"{prefix}{name}.txt"
        if not path.is_file():
            missing.append(name)
            out[name] = ClassDetections([], np.zeros(0), np.zeros((0, 4)))
            continue
        out[name] = _parse_result_file(path)
    if len(missing) == len(class_names) and class_names:
        raise FileNotFoundError(f"no result files {prefix}<class>.txt found in {results_dir}")
    for name in missing:
        logger.warning(
            "no result file %s in %s: no detections for class %r", f"{prefix}{name}.txt", results_dir, name
        )
    return out


def _parse_result_file(path: Path) -> ClassDetections:
    """One result file -> ClassDetections; ValueError naming the file and line if malformed: not UTF-8,
    not six fields, a value that is not a finite number, or an inverted box."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error})") from None
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    for n, fields in lines:
        if len(fields) != 6:
            raise ValueError(f"{path}:{n}: expected 'image_id score x1 y1 x2 y2', got {len(fields)} fields")
    try:
        values = np.fromiter((float(v) for _, f in lines for v in f[1:]), np.float64, 5 * len(lines))
    except ValueError:
        for n, fields in lines:  # slow path, only to name the bad line
            try:
                [float(v) for v in fields[1:]]
            except ValueError:
                raise ValueError(f"{path}:{n}: non-numeric value in {' '.join(fields)!r}") from None
        raise
    values = values.reshape(-1, 5)
    bad = ~np.isfinite(values).all(1) | (values[:, 3] < values[:, 1]) | (values[:, 4] < values[:, 2])
    if bad.any():
        n, fields = lines[int(np.argmax(bad))]
        why = (
            "a score or coordinate that is not finite"
            if not np.isfinite(values[bad][0]).all()
            else ("an inverted box (x2 < x1 or y2 < y1)")
        )
        raise ValueError(f"{path}:{n}: {why} in {' '.join(fields)!r} ({int(bad.sum())} such line(s))")
    return ClassDetections([f[0] for _, f in lines], values[:, 0].copy(), values[:, 1:].copy())


def format_results(results: dict) -> str:
    """A per-class table (AP in percent, number of positives) and the mAP, from :meth:`compute`."""
    width = max([len("class")] + [len(n) for n in results["ap"]])
    lines = [f"{'class':<{width}}  {'AP(%)':>6}  {'npos':>6}"]
    for name, ap in results["ap"].items():
        ap_text = "   n/a" if np.isnan(ap) else f"{100 * ap:6.2f}"
        lines.append(f"{name:<{width}}  {ap_text}  {results['num_positives'][name]:>6d}")
    lines.append(f"{'mAP':<{width}}  {100 * results['map']:6.2f}")
    return "\n".join(lines)

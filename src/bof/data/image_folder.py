"""Image classification data in the ImageFolder layout (``<root>/<split>/<class>/<image>``): ImageNet
for backbone pretraining, and the synthetic shape crops for a CPU run of ``task=classify``."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from bof.data.synthetic import SYNTHETIC_CLASSES, ensure_synthetic_voc
from bof.data.voc import VOCDetection

logger = logging.getLogger(__name__)


def image_folder(root: str | os.PathLike, split: str) -> ImageFolder:
    """``<root>/<split>`` as an ImageFolder (ImageNet: train and val, 1000 class folders)."""
    path = Path(root) / split
    if not path.is_dir():
        raise FileNotFoundError(
            f"ImageFolder split not found: {path} (expected <root>/<split>/<class>/<image>)"
        )
    return ImageFolder(str(path))


def synthetic_image_folder(
    cache_dir: str | os.PathLike, split: str, generator: dict | None = None, crop_size: int = 64
) -> ImageFolder:
    """Crops of the synthetic detection set's objects (difficult ones left out), one folder per shape
    class, written once beside the detection data (``cls<crop_size>/<split>/<class>/``). ``generator``:
    the detection set's parameters, scene options included (crops of harder scenes; split ``ooc`` too)."""
    year_dir = ensure_synthetic_voc(cache_dir, **dict(generator or {}))
    out = year_dir / f"cls{crop_size}" / split
    if not out.is_dir():
        write_crops(
            VOCDetection(year_dir.parent, [[year_dir.name, split]], class_names=SYNTHETIC_CLASSES),
            out,
            crop_size,
        )
    return ImageFolder(str(out))


def write_crops(dataset: VOCDetection, out: Path, crop_size: int, margin: float = 0.1) -> None:
    """Each non-difficult object's box, widened by ``margin`` per side, resized to a square JPEG."""
    tmp = Path(
        tempfile.mkdtemp(dir=out.parent.parent if out.parent.parent.exists() else None, prefix=".cls-")
    )
    for name in dataset.class_names:
        (tmp / name).mkdir(parents=True)
    count = 0
    for i in tqdm(range(len(dataset)), desc=f"crops for {out}", leave=False):
        image, target = dataset[i]
        for k, (box, label, difficult) in enumerate(
            zip(target["boxes"], target["labels"], target["difficult"], strict=True)
        ):
            if difficult:
                continue
            x1, y1, x2, y2 = box.tolist()
            dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
            left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
            right, bottom = min(image.shape[2], int(x2 + dx) + 1), min(image.shape[1], int(y2 + dy) + 1)
            crop = TF.resize(image[:, top:bottom, left:right], [crop_size, crop_size], antialias=True)
            Image.fromarray(crop.permute(1, 2, 0).numpy()).save(
                tmp / dataset.class_names[int(label)] / f"{target['image_id']}_{k}.jpg", quality=95
            )
            count += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process (DDP rank) finished first
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %d crops to %s", count, out)


class PCALighting:
    """AlexNet's PCA lighting noise, GluonCV's ``RandomLighting(0.1)`` of ImageNet pretraining: adds
    ``eigvec @ (alpha * eigval)`` grey levels to every pixel, alpha ~ N(0, alphastd) per component, with
    ImageNet's RGB eigenvalues scaled to 0..255 as MXNet does. uint8 [3, H, W] in and out."""

    EIGVAL = (55.46, 4.794, 1.148)
    EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))

    def __init__(self, alphastd: float = 0.1):
        self.alphastd = alphastd

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.alphastd
        shift = torch.tensor(self.EIGVEC) @ (alpha * torch.tensor(self.EIGVAL))
        return tv_tensors.wrap(
            (image.float() + shift.view(3, 1, 1)).round_().clamp_(0, 255).to(image.dtype), like=image
        )

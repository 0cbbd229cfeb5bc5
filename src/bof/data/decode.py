"""Image decoding for every data set: libjpeg-turbo through torchvision.io, behind a pixel limit read
from the header, so that a corrupt or hostile file is a bad sample, not gigabytes allocated."""

from __future__ import annotations

import os
import warnings

import torch
import torchvision
from PIL import Image

from bof.data.bad_samples import BadSampleError
from bof.utils.checks import require, whole

MAX_IMAGE_PIXELS = 100_000_000  # data.max_image_pixels' default: larger images are refused from the header


def check_pixel_limit(max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """``data.max_image_pixels``, which every data set takes: checked by its constructor and, as its
    ``check``, at start-up before anything is read or generated (bof.engine.run_setup)."""
    limit = lambda v: v > 0 and whole(v)
    require("data.max_image_pixels", max_image_pixels, limit, "a whole number of pixels > 0")


def read_size(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it (tens of microseconds): a file that
    is not an image or is over ``max_pixels`` is a BadSampleError naming it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # our limit decides
        try:
            with Image.open(path) as header:
                width, height = header.size
        except (OSError, Image.DecompressionBombError) as error:  # not an image, or PIL's own hard limit
            raise BadSampleError(f"{path}: cannot decode the image (its header: {error})") from None
    if width * height > max_pixels:
        raise BadSampleError(f"{path}: {width} x {height} pixels, over data.max_image_pixels={max_pixels:,}")
    return width, height


def decode_rgb(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Decodes an image file to a uint8 [3, H, W] RGB tensor with libjpeg-turbo (no PIL round trip).

    The size is read from the header first (PIL, without decoding): an image over ``max_pixels``
    (``data.max_image_pixels``) is a BadSampleError, not gigabytes allocated. torchvision 0.29 deprecated
    its image codecs in favour of TorchCodec (not a dependency here); the DeprecationWarning it emits on
    every call is silenced to keep training logs readable. A 16-bit image (PNGs of real data sets, often
    named .jpg) becomes 8 bits by its high byte, as PIL reads 16-bit colour PNGs; the network, the
    augmentation and the evaluation all take uint8.
    """
    read_size(path, max_pixels)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        try:
            image = torchvision.io.decode_image(str(path), mode=torchvision.io.ImageReadMode.RGB)
        except RuntimeError as error:  # corrupt or truncated
            raise BadSampleError(f"{path}: cannot decode the image ({error})") from None
    if image.dtype == torch.uint16:
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.dtype != torch.uint8:
        raise BadSampleError(f"{path}: decodes to {image.dtype} pixels, not 8 or 16 bits per channel")
    return image

"""Data that must not be trusted: an image header claiming billions of pixels is refused before any
decoding, and COCO annotations without a proper bbox or with a file outside the image folder fail
naming the file and the image."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bof.data.bad_samples import BadSampleError
from bof.data.coco import COCODetection
from bof.data.decode import decode_rgb
from tests.helpers.generated import make_coco


def test_a_16_bit_png_named_jpg_decodes_to_8_bits_by_its_high_byte(tmp_path):
    """Real data sets hold 16-bit PNGs, often named .jpg: uint16 pixels would reach the network and the
    evaluation (mAP 0) or crash a transform; they become uint8, their high byte."""
    values = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    path = tmp_path / "depth_like.jpg"
    Image.fromarray(values).save(path, format="PNG")  # mode I;16
    image = decode_rgb(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert torch.equal(image[0], torch.from_numpy((values >> 8).astype(np.uint8)))


def test_a_jpeg_header_claiming_60000_x_60000_is_refused_without_decoding(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (64, 48)).save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # start of frame: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    with pytest.raises(BadSampleError, match="huge.jpg: .*(over data.max_image_pixels|cannot decode)"):
        decode_rgb(path)
    small = tmp_path / "small.jpg"
    Image.new("RGB", (64, 48)).save(small)
    with pytest.raises(BadSampleError, match=r"small.jpg: 64 x 48 pixels, over data.max_image_pixels=1,000"):
        decode_rgb(small, max_pixels=1000)
    assert decode_rgb(small).shape == (3, 48, 64)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "is not a path inside"),
        (lambda d: d["images"][0].update(file_name="/etc/passwd"), "is not a path inside"),
        (lambda d: d["annotations"][0].pop("bbox"), "has no bbox of four numbers"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "not finite or negative"),
        (lambda d: d["annotations"][0].update(category_id=123456), "unknown category 123456"),
    ],
)
def test_malformed_coco_annotations_fail_naming_the_file_and_image(tmp_path, change, message):
    coco = make_coco(tmp_path, images_per_split=2, width=160, height=120)
    path = coco / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BadSampleError, match=rf"instances_val2017.json: image \d+: .*{message}"):
        COCODetection(coco, "val2017", train=False)

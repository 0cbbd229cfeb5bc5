"""Pictures: one colour per class, labels on a filled background of that colour in a readable text
colour, ground truth apart from the predictions."""

import torch

from bof.utils.drawing import FILLED_LABELS, class_colour, draw_detections, text_colour


def test_each_class_has_its_colour_and_its_labels_sit_on_a_filled_background():
    image = torch.full((3, 300, 300), 128, dtype=torch.uint8)
    detections = {
        "boxes": torch.tensor([[20.0, 40.0, 120.0, 250.0], [150.0, 60.0, 280.0, 280.0]]),
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([0, 1]),
    }
    truth = {"boxes": torch.tensor([[5.0, 5.0, 295.0, 295.0]])}
    drawn = draw_detections(image, detections, truth, ["cat", "dog"])
    assert class_colour(0) != class_colour(1)
    assert tuple(drawn[:, 200, 20].tolist()) == class_colour(0)  # the left edges
    assert tuple(drawn[:, 200, 150].tolist()) == class_colour(1)
    assert tuple(drawn[:, 150, 5].tolist()) == (255, 255, 255)  # ground truth: white on black
    if FILLED_LABELS:  # inside the box's top left corner: the label's background and its text
        corner = drawn[:, 42:52, 22:60].reshape(3, -1).T.tolist()
        colours = {tuple(p) for p in corner}
        assert class_colour(0) in colours
        text = (0, 0, 0) if text_colour(class_colour(0)) == "black" else (255, 255, 255)
        assert any(sum(abs(a - b) for a, b in zip(p, text, strict=True)) < 60 for p in colours)


def test_text_is_black_on_light_and_white_on_dark_colours():
    assert text_colour((255, 255, 0)) == "black" and text_colour((31, 119, 180)) == "white"

"""Faster R-CNN: torchvision's parameter counts, trick-aware losses, training runs, and the free lunch."""

import pytest
import torch
from hydra.utils import instantiate
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from bof.engine.run_setup import build_tricks
from bof.models.faster_rcnn import ALL_DETECTIONS, FasterRCNNDetector
from bof.models.rcnn_heads import SMOOTH_L1_BETA
from bof.train import build_data_loaders, build_model
from tests.helpers import cpu_run


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def test_r50_fpn_matches_torchvision_builder():
    ours = FasterRCNNDetector(num_classes=20, depth=50, design="fpn", trainable_bn=True)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21)
    assert parameters(ours) == parameters(reference) == 41_449_656


def test_c4_design_has_one_stride_16_map_and_layer4_as_roi_head():
    model = FasterRCNNDetector(num_classes=20, depth=101, design="c4")
    features = model.detector.backbone(torch.zeros(1, 3, 64, 96))
    assert features.shape == (1, 1024, 4, 6)  # stride 16
    assert model.detector.roi_heads.box_head[0][0].conv1.in_channels == 1024  # layer4 takes the RoIs
    assert model.detector.roi_heads.box_predictor.cls_score.out_features == 21


def test_c4_predictor_starts_as_gluoncvs_and_the_backbone_is_left_as_built():
    """GluonCV's rcnn.py: class scores N(0, 0.01), box deltas N(0, 0.001), biases 0; its RPN head
    N(0, 0.01), as torchvision's (docs/fidelity.md "Faster R-CNN"). The ResNet is not touched."""
    torch.manual_seed(0)
    model = FasterRCNNDetector(num_classes=20, depth=50, design="c4").detector
    torch.manual_seed(0)
    resnet = resnet50(norm_layer=FrozenBatchNorm2d)
    assert torch.equal(model.backbone[0].weight, resnet.conv1.weight)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.roi_heads.box_head[0].parameters(), resnet.layer4.parameters(), strict=True)
    )
    predictor, rpn = model.roi_heads.box_predictor, model.rpn.head
    for layer, std in (
        (predictor.cls_score, 0.01),
        (predictor.bbox_pred, 0.001),
        *((c, 0.01) for c in (rpn.conv[0][0], rpn.cls_logits, rpn.bbox_pred)),
    ):
        assert (
            layer.weight.std().item() == pytest.approx(std, rel=0.05) and layer.weight.mean().abs() < std / 10
        )
        assert not layer.bias.any()


def batch(lam=None):
    """Two images; ``lam``: as mixup leaves them (lam on the first image's boxes, 1 - lam on the second's)."""
    torch.manual_seed(0)
    images = [torch.randn(3, 64, 80), torch.randn(3, 72, 64)]
    targets = [
        {
            "boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
    ]
    if lam is not None:
        targets[0] |= {"weights": torch.tensor([lam, lam]), "mixup_lambda": lam}
        targets[1] |= {"weights": torch.tensor([1 - lam]), "mixup_lambda": lam}
    return images, targets


def losses(model, lam=None):
    torch.manual_seed(1)  # the RPN and RoI samplers draw from the global RNG
    return {k: v.item() for k, v in model(*batch(lam)).items()}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FasterRCNNDetector(num_classes=3, depth=50, design="fpn", min_size=64, max_size=96).train()


def set_mixup_loss(model, rule):
    model.detector.rpn.mixup_loss = model.detector.roi_heads.mixup_loss = rule


def test_mixup_halved_halves_every_loss_of_a_mixed_image_whatever_its_lambda(model):
    """GluonCV's rule (the default): a mixed image's whole loss x 0.5, its boxes at full weight."""
    assert model.detector.rpn.mixup_loss == model.detector.roi_heads.mixup_loss == "halved"
    plain = losses(model)
    for lam in (0.5, 0.8):
        assert losses(model, lam) == pytest.approx({k: 0.5 * v for k, v in plain.items()}, rel=1e-5)
    assert losses(model, 1.0) == pytest.approx(plain, rel=1e-6)  # lam 1 mixes nothing in


def test_a_mixed_image_without_boxes_is_halved_too_and_per_box_leaves_it_at_one(model):
    images, targets = batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}

    def objectness(rule, mixed):
        set_mixup_loss(model, rule)
        torch.manual_seed(1)
        empty = {**targets[1], "weights": torch.zeros(0)} | ({"mixup_lambda": 0.5} if mixed else {})
        marked = [targets[0], empty]
        try:
            return model(images, marked)["loss_objectness"].item()
        finally:
            set_mixup_loss(model, "halved")

    assert objectness("halved", True) < objectness("halved", False)
    assert objectness("per_box", True) == objectness("per_box", False)


def test_mixup_per_box_scales_the_rpn_and_roi_losses_of_matched_boxes_only(model):
    set_mixup_loss(model, "per_box")
    try:
        full, half = losses(model), losses(model, 0.5)
    finally:
        set_mixup_loss(model, "halved")
    assert half["loss_box_reg"] == pytest.approx(0.5 * full["loss_box_reg"], rel=1e-5)
    assert half["loss_rpn_box_reg"] == pytest.approx(0.5 * full["loss_rpn_box_reg"], rel=1e-5)
    assert 0.5 * full["loss_classifier"] < half["loss_classifier"] < full["loss_classifier"]  # background: 1
    assert 0.5 * full["loss_objectness"] < half["loss_objectness"] < full["loss_objectness"]


def test_mixup_loss_is_checked():
    with pytest.raises(ValueError, match="model.net.mixup_loss must be one of"):
        FasterRCNNDetector(num_classes=3, mixup_loss="gluoncv")


def test_label_smoothing_changes_the_roi_classification_loss(model):
    plain = losses(model)["loss_classifier"]
    model.detector.roi_heads.label_smoothing = 0.1
    try:
        smoothed = losses(model)["loss_classifier"]
    finally:
        model.detector.roi_heads.label_smoothing = 0.0
    assert smoothed != plain


def test_smoothing_on_builds_the_softmax_rule_and_syncbn_trainable_bn(make_cfg):
    cfg = make_cfg("model=faster_rcnn_r50_c4", "smoothing=on")
    model = build_model(cfg, 6, torch.device("cpu"), smoothing=build_tricks(cfg).smoothing)
    # docs/fidelity.md "Label smoothing": softmax eps 0.01
    assert model.detector.roi_heads.label_smoothing == 0.01
    trainable = build_model(cfg, 6, torch.device("cpu"), trainable_bn=True)
    norms = {type(m).__name__ for m in trainable.modules() if "BatchNorm" in type(m).__name__}
    assert norms == {"BatchNorm2d"}
    assert {type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__} == {
        "FrozenBatchNorm2d"
    }


def first_batch(cfg):
    train_set = instantiate(cfg.data.train)
    loader, _ = build_data_loaders(cfg, cpu_run(cfg), train_set, train_set, build_tricks(cfg))
    loader.batch_sampler.set_epoch(0)
    keys = next(iter(loader.batch_sampler))
    return [train_set[k.index][0] for k in keys], next(iter(loader))[0]


def test_images_keep_their_size_and_augment_none_never_flips(make_cfg):
    raw, images = first_batch(make_cfg("model=faster_rcnn_r50_fpn", "augment=none"))
    assert isinstance(images, list) and all(torch.equal(a, b) for a, b in zip(raw, images, strict=True))
    raw, images = first_batch(make_cfg("model=faster_rcnn_r50_fpn", "augment=rcnn", "augment.flip_p=1.0"))
    assert all(torch.equal(a.flip(-1), b) for a, b in zip(raw, images, strict=True))


ALL_TRICKS = ["augment=yolo", "mixup=beta15", "smoothing=on", "lr_schedule=cosine", "syncbn=on"]
NO_TRICKS = ["augment=none", "mixup=off", "smoothing=off", "lr_schedule=step", "syncbn=off"]


@pytest.mark.parametrize("model_option", ["yolov3", "faster_rcnn_r50_fpn"])
def test_free_lunch_inference_is_unchanged_by_every_trick(make_cfg, model_option):
    built = []
    for tricks in (ALL_TRICKS, NO_TRICKS):
        cfg = make_cfg(
            f"model={model_option}", *tricks, *(["random_shapes=on"] if model_option == "yolov3" else [])
        )
        t = build_tricks(cfg)
        torch.manual_seed(0)
        built.append(build_model(cfg, 6, torch.device("cpu"), smoothing=t.smoothing).eval())  # one process
    on, off = built
    assert {k: v.shape for k, v in on.state_dict().items()} == {
        k: v.shape for k, v in off.state_dict().items()
    }
    off.load_state_dict(on.state_dict())
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        if model_option == "yolov3":  # the raw head outputs, before any score threshold
            raw_on, raw_off = on.net(image), off.net(image)
            assert all(torch.equal(a, b) for a, b in zip(raw_on, raw_off, strict=True))
        inputs = image if model_option == "yolov3" else list(image)
        a, b = on(inputs), off(inputs)
        assert all(torch.equal(a[0][k], b[0][k]) for k in ("boxes", "scores", "labels"))


def test_random_shapes_with_faster_rcnn_says_it_is_yolov3s_trick(make_cfg):
    with pytest.raises(
        ValueError, match=r"random_shapes=on .* model=faster_rcnn_r50_fpn .* random_shapes=off"
    ):
        build_tricks(make_cfg("model=faster_rcnn_r50_fpn", "random_shapes=on"))


GLUONCV_C4 = {  # docs/fidelity.md "Faster R-CNN": GluonCV's faster_rcnn_resnet*_v1b_voc / _coco
    "faster_rcnn_r50_c4": dict(
        pre=(12000, 6000),
        post=(2000, 300),
        rpn_nms=0.7,
        min_size=16,
        sampling=2,
        beta=1.0,
        score=1e-4,
        nms=0.3,
        keep=ALL_DETECTIONS,  # GluonCV's VOC forward never applies its post_nms=100
    ),
    "faster_rcnn_r101_c4_coco": dict(
        pre=(12000, 6000),
        post=(2000, 1000),
        rpn_nms=0.7,
        min_size=1,
        sampling=2,
        beta=1.0,
        score=0.05,
        nms=0.5,
        keep=ALL_DETECTIONS,
    ),
}


@pytest.mark.parametrize("name", list(GLUONCV_C4))
def test_c4_models_take_gluoncvs_proposal_and_detection_values(make_cfg, name):
    expected = GLUONCV_C4[name]
    net = instantiate(make_cfg(f"model={name}").model.net, num_classes=3).detector
    rpn, heads = net.rpn, net.roi_heads
    assert (rpn._pre_nms_top_n["training"], rpn._pre_nms_top_n["testing"]) == expected["pre"]
    assert (rpn._post_nms_top_n["training"], rpn._post_nms_top_n["testing"]) == expected["post"]
    assert (rpn.nms_thresh, rpn.min_size, heads.box_roi_pool.sampling_ratio) == (
        expected["rpn_nms"],
        expected["min_size"],
        expected["sampling"],
    )
    assert (heads.box_beta, heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (
        expected["beta"],
        expected["score"],
        expected["nms"],
        expected["keep"],
    )


def test_voc_c4_config_scores_every_detection_left_after_nms(make_cfg):
    """GluonCV's VOC forward keeps every detection its per-class NMS leaves (up to 20 x 300 per image) and
    VOC07MApMetric scores them all: 300 disjoint proposals with every class scored above 1e-4 give
    20 x 300 detections, not 100 (docs/fidelity.md "Faster R-CNN")."""
    heads = instantiate(make_cfg("model=faster_rcnn_r50_c4").model.net, num_classes=20).detector.roi_heads
    corners = torch.arange(300.0)[:, None] * 20
    proposals = [
        torch.cat([corners % 600, corners // 600 * 20, corners % 600 + 10, corners // 600 * 20 + 10], 1)
    ]
    logits, deltas = torch.zeros(300, 21), torch.zeros(300, 21 * 4)  # softmax 1/21 for every class
    boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals, [(600, 600)])
    assert len(boxes[0]) == 20 * 300 > 100 and set(labels[0].tolist()) == set(range(1, 21))


def test_roi_box_beta_and_rpn_min_size_act(model):
    """rho 1 instead of 1/9 changes the RoI box loss; a minimum proposal side larger than the image
    leaves no proposal, hence no detection."""
    heads = model.detector.roi_heads
    ninth = losses(model)["loss_box_reg"]
    heads.box_beta = 1.0
    try:
        assert losses(model)["loss_box_reg"] < ninth  # smooth L1 with beta 1 is below beta 1/9
    finally:
        heads.box_beta = SMOOTH_L1_BETA
    torch.manual_seed(0)
    kwargs = dict(num_classes=3, depth=50, design="c4", min_size=64, max_size=96, box_score_thresh=0.0)
    images = batch()[0]
    some = FasterRCNNDetector(**kwargs).eval()(images)
    none = FasterRCNNDetector(**kwargs, rpn_min_size=1000).eval()(images)
    assert len(some[0]["boxes"]) > 0 and all(len(d["boxes"]) == 0 for d in none)

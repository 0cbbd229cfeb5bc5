"""GluonCV's ResNet variants: v1d's deep stem and average-pool shortcuts, the zero last gamma, and the
width multiplier of the CPU miniatures (width 1: torchvision's model itself)."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet50, resnet101
from torchvision.models.resnet import ResNet

from bof.models.resnet import build_resnet


def test_v1d_has_the_deep_stem_and_average_pool_shortcuts():
    net = build_resnet(50, "v1d", num_classes=7).eval()
    convs = [m for m in net.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (3, 3), (2, 2)),
        (32, (3, 3), (1, 1)),
        (64, (3, 3), (1, 1)),
    ]
    for layer, stride in zip((net.layer1, net.layer2, net.layer3, net.layer4), (1, 2, 2, 2), strict=True):
        pool, conv, _ = layer[0].downsample
        assert isinstance(pool, nn.AvgPool2d) and pool.stride == stride and pool.ceil_mode
        assert conv.stride == (1, 1) and conv.kernel_size == (1, 1)
    assert net(torch.zeros(1, 3, 65, 65)).shape == (1, 7)  # odd sizes: ceil-mode pooling matches the conv


@pytest.mark.parametrize("last_gamma", [False, True])
def test_last_gamma_zeroes_each_blocks_last_bn(last_gamma):
    net = build_resnet(50, "v1d", last_gamma=last_gamma)
    gammas = torch.cat([block.bn3.weight for layer in (net.layer1, net.layer4) for block in layer])
    assert torch.all(gammas == (0.0 if last_gamma else 1.0))
    assert torch.all(net.layer1[0].bn2.weight == 1.0)


def test_v1d_has_no_torchvision_weights():
    with pytest.raises(ValueError, match="variant=v1d: torchvision has no ImageNet weights"):
        build_resnet(101, "v1d", pretrained=True)
    with pytest.raises(ValueError, match="model.net.variant"):
        build_resnet(50, "v1c")


def parameters(net, skip_fc=True):
    return sum(p.numel() for name, p in net.named_parameters() if not (skip_fc and name.startswith("fc.")))


@pytest.mark.parametrize("depth", [50, 101])
def test_width_one_is_torchvisions_resnet_itself(depth):
    """width=1 builds torchvision's model with its builder: same class, keys, shapes and initial weights,
    so torchvision's and GluonCV's ImageNet weights still load."""
    builder = {50: resnet50, 101: resnet101}[depth]
    torch.manual_seed(0)
    ours = build_resnet(depth, "v1b", num_classes=7, width=1.0)
    torch.manual_seed(0)
    theirs = builder(num_classes=7)
    assert type(ours) is ResNet
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    )
    deep = build_resnet(depth, "v1d", width=1.0).state_dict()
    assert deep["conv1.6.weight"].shape == (64, 32, 3, 3) and deep["layer3.0.downsample.1.weight"].shape == (
        1024,
        512,
        1,
        1,
    )


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("variant", ["v1b", "v1d"])
@pytest.mark.parametrize("width", [0.125, 0.25])
def test_width_scales_every_stage_and_the_parameters_by_width_squared(depth, variant, width):
    full, narrow = (
        build_resnet(depth, variant, num_classes=7),
        build_resnet(depth, variant, num_classes=7, width=width),
    )
    assert list(narrow.state_dict()) == list(
        full.state_dict()
    )  # the same names: checkpoints map name by name
    ratio = parameters(narrow) / parameters(full)
    assert width**2 <= ratio <= 1.03 * width**2  # convolutions scale by width^2, BN (a few %) by width
    outputs = [
        layer[-1].conv3.out_channels for layer in (narrow.layer1, narrow.layer2, narrow.layer3, narrow.layer4)
    ]
    assert outputs == [round(c * width) for c in (256, 512, 1024, 2048)]
    assert narrow.fc.in_features == outputs[-1]
    assert narrow(torch.zeros(2, 3, 65, 65)).shape == (2, 7)


def test_a_narrow_v1d_scales_its_deep_stem():
    net = build_resnet(50, "v1d", width=0.25)
    convs = [m for m in net.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 8), (8, 16)]
    assert net.bn1.weight.shape == (16,) and net.layer1[0].conv1.in_channels == 16
    assert isinstance(net.layer2[0].downsample[0], nn.AvgPool2d)


@pytest.mark.parametrize("last_gamma", [False, True])
def test_a_narrow_resnet_keeps_torchvisions_initialisation(last_gamma):
    net = build_resnet(101, "v1b", width=0.25, last_gamma=last_gamma)
    gammas = torch.cat([block.bn3.weight for layer in (net.layer1, net.layer4) for block in layer])
    assert torch.all(gammas == (0.0 if last_gamma else 1.0)) and torch.all(net.bn1.weight == 1.0)
    for conv in (net.conv1, net.layer3[5].conv2):  # kaiming normal, fan out, ReLU gain
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)


def test_width_is_checked_and_has_no_imagenet_weights():
    with pytest.raises(
        ValueError, match=r"model.net.width=0.25: torchvision's ImageNet weights are for width 1.0"
    ):
        build_resnet(50, "v1b", pretrained=True, width=0.25)
    with pytest.raises(ValueError, match=r"model.net.width=0: must be a channel multiplier > 0"):
        build_resnet(50, "v1b", width=0)

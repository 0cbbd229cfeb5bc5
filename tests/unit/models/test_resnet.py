"""GluonCV's ResNet variants: v1d's deep stem and average-pool shortcuts, and the zero last gamma."""

import pytest
import torch
from torch import nn

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

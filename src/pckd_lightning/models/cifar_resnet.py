"""The CIFAR ResNets of the CRD benchmark (resnet8..110, resnet8x4, resnet32x4).

Three stages of basic blocks at strides 1, 2, 2; the module names (``conv1``, ``layer1``,
``downsample``, ``fc``) are those of the published teachers, so their checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import basic_block, conv3x3, global_pool, init_fan_out
from pckd_lightning.models.registry import register_model

NARROW = (16, 16, 32, 64)
WIDE = (32, 64, 128, 256)


class CifarResNet(ZooModel):
    """A 3x3 stem then three stages of ``(depth - 2) / 6`` basic blocks each.

    ``widths`` is (stem, stage1, stage2, stage3) channels.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        for index, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2), strict=True), start=1):
            blocks = [
                basic_block(in_channels if i == 0 else planes, planes, stride if i == 0 else 1, "downsample")
                for i in range(blocks_per_stage)
            ]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = planes
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_dim = widths[3]
        init_fan_out(self)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [F.relu(self.bn1(self.conv1(x)))]
        for layer in (self.layer1, self.layer2, self.layer3):
            stages.append(layer(stages[-1]))
        pooled = global_pool(stages[-1])
        return ModelOutput(stages=stages, pooled=pooled, logits=self.fc(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.fc


@register_model
def resnet8(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(8, NARROW, num_classes, **kwargs)


@register_model
def resnet14(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(14, NARROW, num_classes, **kwargs)


@register_model
def resnet20(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(20, NARROW, num_classes, **kwargs)


@register_model
def resnet32(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(32, NARROW, num_classes, **kwargs)


@register_model
def resnet44(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(44, NARROW, num_classes, **kwargs)


@register_model
def resnet56(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(56, NARROW, num_classes, **kwargs)


@register_model
def resnet110(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(110, NARROW, num_classes, **kwargs)


@register_model
def resnet8x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(8, WIDE, num_classes, **kwargs)


@register_model
def resnet32x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(32, WIDE, num_classes, **kwargs)

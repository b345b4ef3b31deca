"""ResNet18/34/50 with a CIFAR stem (one stride-1 3x3 conv, no max-pool), as in the CRD benchmark.

Names follow the published checkpoints: ``conv1``/``bn1``, ``layer1..4`` whose projections are
called ``shortcut``, and a ``linear`` classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import (
    ResidualBlock,
    basic_block,
    bottleneck_block,
    conv3x3,
    global_pool,
    init_fan_out,
)
from pckd_lightning.models.registry import register_model

BlockFactory = Callable[[int, int, int], ResidualBlock]


class CifarStemResNet(ZooModel):
    """Four stages at 64, 128, 256, 512 planes (strides 1, 2, 2, 2); bottlenecks output 4x planes."""

    def __init__(self, block: BlockFactory, depths: tuple[int, ...], num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        for index, (planes, depth, stride) in enumerate(
            zip((64, 128, 256, 512), depths, (1, 2, 2, 2), strict=True), start=1
        ):
            blocks = []
            for i in range(depth):
                blocks.append(block(in_channels, planes, stride if i == 0 else 1))
                in_channels = blocks[-1].out_channels
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels
        init_fan_out(self)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [F.relu(self.bn1(self.conv1(x)))]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            stages.append(layer(stages[-1]))
        pooled = global_pool(stages[-1])
        return ModelOutput(stages=stages, pooled=pooled, logits=self.linear(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.linear


@register_model
def ResNet18(num_classes: int = 100, **kwargs) -> CifarStemResNet:
    return CifarStemResNet(basic_block, (2, 2, 2, 2), num_classes, **kwargs)


@register_model
def ResNet34(num_classes: int = 100, **kwargs) -> CifarStemResNet:
    return CifarStemResNet(basic_block, (3, 4, 6, 3), num_classes, **kwargs)


@register_model
def ResNet50(num_classes: int = 100, **kwargs) -> CifarStemResNet:
    return CifarStemResNet(bottleneck_block, (3, 4, 6, 3), num_classes, **kwargs)

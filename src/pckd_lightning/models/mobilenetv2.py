"""The CIFAR MobileNetV2 of the CRD benchmark (registered as ``MobileNetV2``: expansion 6, width 0.5).

Names follow the published checkpoints: ``conv1``, ``blocks.<group>.<index>.conv.<0..7>``, ``conv2``,
``classifier.0``. Unlike torchvision's, every inverted residual keeps its 1x1 expansion conv, even
at expansion 1, and the last conv stays 1280 wide at widths below 1.
"""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import global_pool, init_fan_out
from pckd_lightning.models.registry import register_model

# (expansion or None for the model's own, output channels at width 1, blocks, first stride)
GROUPS: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
# Groups whose outputs are the reported stages (one per resolution change, as in the reference).
STAGE_GROUPS = (1, 2, 4, 6)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise 3x3, linear 1x1 project; identity skip when the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_skip = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *conv_bn_relu(in_channels, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_skip else out


class CifarMobileNetV2(ZooModel):
    """MobileNetV2 with a stride-2 stem, for 32x32 inputs (a 2x2 map before pooling).

    Stages are the stem output and the (linear) outputs of block groups 1, 2, 4 and 6.
    """

    def __init__(self, num_classes: int = 100, expansion: int = 6, width_mult: float = 0.5) -> None:
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(3, in_channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for group_expansion, width, count, first_stride in GROUPS:
            out_channels = int(width * width_mult)
            group = []
            for i in range(count):
                stride = first_stride if i == 0 else 1
                group.append(
                    InvertedResidual(in_channels, out_channels, stride, group_expansion or expansion)
                )
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*group))
        self.feature_dim = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(in_channels, self.feature_dim, 1)
        self.classifier = nn.Sequential(nn.Linear(self.feature_dim, num_classes))
        init_fan_out(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        out = self.conv1(x)
        stages = [out]
        for index, group in enumerate(self.blocks):
            out = group(out)
            if index in STAGE_GROUPS:
                stages.append(out)
        pooled = global_pool(self.conv2(out))
        return ModelOutput(stages=stages, pooled=pooled, logits=self.classifier(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.classifier[0]


@register_model
def MobileNetV2(num_classes: int = 100, **kwargs) -> CifarMobileNetV2:
    return CifarMobileNetV2(num_classes, **kwargs)

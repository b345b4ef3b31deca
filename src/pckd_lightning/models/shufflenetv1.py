"""The CIFAR ShuffleNetV1 of the CRD benchmark (``ShuffleV1``: 3 groups, widths 240/480/960).

Names follow the published checkpoints: ``conv1``/``bn1`` stem, ``layer1..3`` of bottlenecks,
``linear`` classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import channel_shuffle, global_pool
from pckd_lightning.models.registry import register_model

STEM_CHANNELS = 24


class ShuffleBottleneck(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; summed with the input, or at stride 2
    concatenated with its 3x3 average pool (so ``out_channels`` excludes the input's channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_channels // 4
        # The stem is too narrow to group, so the first block's 1x1 is dense (and its shuffle a no-op).
        self.first_groups = 1 if in_channels == STEM_CHANNELS else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(ZooModel):
    """A 1x1 stem (no downsampling, for 32x32 inputs) and three stages that each halve the resolution."""

    def __init__(
        self, widths: tuple[int, ...], depths: tuple[int, ...], groups: int, num_classes: int = 100
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        in_channels = STEM_CHANNELS
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            blocks = [ShuffleBottleneck(in_channels, width - in_channels, 2, groups)]
            blocks += [ShuffleBottleneck(width, width, 1, groups) for _ in range(depth - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = width
        self.linear = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [F.relu(self.bn1(self.conv1(x)))]
        for layer in (self.layer1, self.layer2, self.layer3):
            stages.append(layer(stages[-1]))
        pooled = global_pool(stages[-1])
        return ModelOutput(stages=stages, pooled=pooled, logits=self.linear(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.linear


@register_model
def ShuffleV1(num_classes: int = 100, **kwargs) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, **kwargs)

"""The CIFAR ShuffleNetV2 of the CRD benchmark (``ShuffleV2``: the 1x net, widths 116/232/464/1024).

Names follow the published checkpoints: ``conv1``/``bn1`` stem, ``layer1..3`` (a down-sampling
block then split blocks), ``conv2``/``bn2`` head, ``linear`` classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import channel_shuffle, conv1x1, global_pool
from pckd_lightning.models.registry import register_model

STEM_CHANNELS = 24


def depthwise3x3(channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


class SplitBlock(nn.Module):
    """Keeps the first half of the channels, transforms the second half (1x1, dw 3x3, 1x1), shuffles."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = depthwise3x3(half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class DownBlock(nn.Module):
    """Two stride-2 branches over the whole input (dw 3x3 then 1x1; 1x1, dw 3x3, 1x1), concatenated
    and shuffled: halves the resolution and sets the width to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = depthwise3x3(in_channels, stride=2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv1x1(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = depthwise3x3(mid, stride=2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = conv1x1(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ZooModel):
    """A 1x1 stem (no downsampling, for 32x32 inputs), three stages, a 1x1 head conv before pooling."""

    def __init__(
        self, widths: tuple[int, ...], depths: tuple[int, ...], head_channels: int, num_classes: int = 100
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(3, STEM_CHANNELS)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        in_channels = STEM_CHANNELS
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            blocks = [DownBlock(in_channels, width), *(SplitBlock(width) for _ in range(depth))]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_channels = width
        self.conv2 = conv1x1(in_channels, head_channels)
        self.bn2 = nn.BatchNorm2d(head_channels)
        self.linear = nn.Linear(head_channels, num_classes)
        self.feature_dim = head_channels

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [F.relu(self.bn1(self.conv1(x)))]
        for layer in (self.layer1, self.layer2, self.layer3):
            stages.append(layer(stages[-1]))
        pooled = global_pool(F.relu(self.bn2(self.conv2(stages[-1]))))
        return ModelOutput(stages=stages, pooled=pooled, logits=self.linear(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.linear


@register_model
def ShuffleV2(num_classes: int = 100, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464), (3, 7, 3), 1024, num_classes, **kwargs)

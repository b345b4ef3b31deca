"""Wide ResNets (WRN-depth-k) of the CRD benchmark: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Pre-activation blocks (BN-ReLU-conv); names follow the published teachers (``block1.layer.0.bn1``,
``convShortcut``, ``fc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import conv1x1, conv3x3, global_pool, init_fan_out
from pckd_lightning.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; a 1x1 projection (fed the activated input) when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        # The reference projects only on a width change; every stride-2 block also widens.
        self.convShortcut = (
            conv1x1(in_channels, out_channels, stride) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated)), inplace=True))
        return out + (x if self.convShortcut is None else self.convShortcut(activated))


class NetworkBlock(nn.Module):
    """A stage; exists only because the reference nests its blocks under ``blockN.layer``."""

    def __init__(self, num_blocks: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                PreActBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
                for i in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ZooModel):
    """WRN-depth-k with ``(depth - 4) / 6`` blocks per stage and widths 16, 16k, 32k, 64k.

    Stages are the raw (pre-activation) block outputs, as the reference's features are; the final
    BN-ReLU is applied only on the way to the pooled feature.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(3, widths[0])
        self.block1 = NetworkBlock(blocks_per_stage, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(blocks_per_stage, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(blocks_per_stage, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_dim = widths[3]
        init_fan_out(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [self.conv1(x)]
        for block in (self.block1, self.block2, self.block3):
            stages.append(block(stages[-1]))
        pooled = global_pool(F.relu(self.bn1(stages[-1])))
        return ModelOutput(stages=stages, pooled=pooled, logits=self.fc(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.fc


@register_model
def wrn_16_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(16, 1, num_classes, **kwargs)


@register_model
def wrn_16_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(16, 2, num_classes, **kwargs)


@register_model
def wrn_40_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(40, 1, num_classes, **kwargs)


@register_model
def wrn_40_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(40, 2, num_classes, **kwargs)

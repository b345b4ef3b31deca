"""Building blocks shared by several architectures, so each family file only states its layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))`` with a branch of ``conv{i}``/``bn{i}`` pairs, ReLU between pairs.

    The CIFAR ResNets call the projection ``downsample`` and the CIFAR-stem ResNet18/34/50 call it
    ``shortcut``; ``shortcut_name`` keeps whichever name the reference checkpoints use. The projection
    (1x1 conv + BN) exists only when the shape changes, so identity shortcuts own no state-dict keys.
    """

    def __init__(
        self, convs: list[nn.Conv2d], in_channels: int, stride: int, shortcut_name: str = "shortcut"
    ) -> None:
        super().__init__()
        for i, conv in enumerate(convs, start=1):
            self.add_module(f"conv{i}", conv)
            self.add_module(f"bn{i}", nn.BatchNorm2d(conv.out_channels))
        self.depth = len(convs)
        self.out_channels = convs[-1].out_channels
        projection = None
        if stride != 1 or in_channels != self.out_channels:
            projection = nn.Sequential(
                conv1x1(in_channels, self.out_channels, stride), nn.BatchNorm2d(self.out_channels)
            )
        self.shortcut_name = shortcut_name
        self.add_module(shortcut_name, projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = F.relu(out, inplace=True)
        projection = getattr(self, self.shortcut_name)
        return F.relu(out + (x if projection is None else projection(x)))


def basic_block(in_channels: int, planes: int, stride: int, shortcut_name: str = "shortcut") -> ResidualBlock:
    """Two 3x3 convolutions; output has ``planes`` channels."""
    convs = [conv3x3(in_channels, planes, stride), conv3x3(planes, planes)]
    return ResidualBlock(convs, in_channels, stride, shortcut_name)


def bottleneck_block(
    in_channels: int, planes: int, stride: int, shortcut_name: str = "shortcut"
) -> ResidualBlock:
    """1x1 reduce, strided 3x3, 1x1 expand; output has ``4 * planes`` channels."""
    convs = [conv1x1(in_channels, planes), conv3x3(planes, planes, stride), conv1x1(planes, 4 * planes)]
    return ResidualBlock(convs, in_channels, stride, shortcut_name)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups, so the next grouped conv sees every group."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def init_fan_out(model: nn.Module, linear_std: float | None = None) -> None:
    """The reference initialisation: He-normal (fan-out) convs, unit BN; optionally N(0, std) linears.

    ``linear_std=None`` keeps PyTorch's default linear init, as the CIFAR ResNets do.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Average over all spatial positions: the fixed-size pools of the references, for any resolution."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

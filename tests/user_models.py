"""Plain ``nn.Module`` classifiers, as a user writes them (no library base class), for the taps tests."""

from __future__ import annotations

import torch
from torch import nn


class MyNet(nn.Module):
    """A small CNN: stem, two stages, a pooling head and a linear classifier."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.layer2 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.layer2(self.layer1(self.stem(x)))))


class TokenNet(nn.Module):
    """Outputs token sequences [B, N, C] in the middle: not feature maps."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.tokens = nn.Identity()
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(self.embed(x).flatten(2).transpose(1, 2))
        return self.fc(tokens.mean(dim=1))

"""The feature interface every zoo model shares, so distillation terms never special-case architectures."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What a model exposes to distillation terms.

    stages: feature maps, the stem's output first, then each stage's output as the reference definition
        exposes it (post-activation for most families; WRN and MobileNetV2 give their blocks' raw outputs).
    pooled: the classifier's input, shape [B, feature_dim].
    logits: the classifier's output, shape [B, num_classes].
    """

    stages: list[torch.Tensor]
    pooled: torch.Tensor
    logits: torch.Tensor


class ZooModel(nn.Module):
    """A classifier that can also return its intermediate features.

    ``model(x)`` returns logits, like any classifier; ``model(x, with_features=True)`` returns a
    :class:`ModelOutput`. ``model.classifier_layer`` is the final ``nn.Linear`` (its rows are the
    category centers that PCKD uses), whatever the reference definition named it.
    """

    #: size of the pooled feature (the classifier's input)
    feature_dim: int

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False) -> torch.Tensor | ModelOutput:
        out = self.forward_features(x)
        return out if with_features else out.logits

    @property
    def classifier_layer(self) -> nn.Linear:
        raise NotImplementedError

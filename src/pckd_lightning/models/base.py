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


@dataclass(frozen=True)
class WeightsFile:
    """The file a model's weights were loaded from, by path and by content: a run records its teacher's, and a
    resume or a report tells teacher files apart by the SHA-256, wherever the file has moved."""

    path: str
    sha256: str


class ZooModel(nn.Module):
    """A classifier that can also return its intermediate features.

    ``model(x)`` returns logits, like any classifier; ``model(x, with_features=True)`` returns a
    :class:`ModelOutput`. ``model.classifier_layer`` is the final ``nn.Linear`` (its rows are the
    category centers that PCKD uses), whatever the reference definition named it.
    """

    #: size of the pooled feature (the classifier's input)
    feature_dim: int
    #: where the weights were loaded from (set by :func:`~pckd_lightning.distillation.load_teacher`); None for
    #: weights initialized or trained here
    weights_file: WeightsFile | None = None

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False) -> torch.Tensor | ModelOutput:
        out = self.forward_features(x)
        return out if with_features else out.logits

    @property
    def classifier_layer(self) -> nn.Linear:
        raise NotImplementedError

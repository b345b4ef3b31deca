"""The feature interface every zoo model shares, so distillation terms never special-case architectures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What a model exposes to distillation terms.

    stages: feature maps, the stem's output first, then each stage's output as the reference definition
        exposes it (post-activation for most families; WRN and MobileNetV2 give their blocks' raw outputs).
    pooled: the classifier's input, shape [B, feature_dim] (None from a model without an embedding, see
        :class:`Capability`).
    logits: the classifier's output, shape [B, num_classes].
    """

    stages: list[torch.Tensor]
    pooled: torch.Tensor | None
    logits: torch.Tensor


@dataclass(frozen=True)
class WeightsFile:
    """The file a model's weights were loaded from, by path and by content: a run records its teacher's, and a
    resume or a report tells teacher files apart by the SHA-256, wherever the file has moved."""

    path: str
    sha256: str


class Capability(str, Enum):
    """What a model's ``forward(x, with_features=True)`` can give; loss terms declare which they need."""

    #: the class scores, [B, num_classes]
    LOGITS = "logits"
    #: the classifier's input, [B, feature_dim] (``ModelOutput.pooled``)
    EMBEDDING = "embedding"
    #: an ``nn.Linear`` from the embedding to the logits, whose rows are the category centers
    CLASSIFIER = "classifier"
    #: at least two [B, C, H, W] maps (``ModelOutput.stages``, the first counted as the stem)
    FEATURE_MAPS = "feature maps"


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

    #: what :meth:`forward_features` gives; the zoo's models give everything, adapters may give less
    capabilities: frozenset[Capability] = frozenset(Capability)

    def lacks(self, capability: Capability) -> str:
        """Why this model does not give ``capability`` and how to make it (for the pair check's errors);
        ``<role>`` stands for ``student`` or ``teacher``."""
        return f"{type(self).__name__} does not give its {capability.value}"

    def adapt_to_data(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Told the data's normalization once it is known; a model that expects another converts its inputs.
        The zoo's models are trained on the data as it comes: nothing to do."""

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False) -> torch.Tensor | ModelOutput:
        out = self.forward_features(x)
        return out if with_features else out.logits

    @property
    def classifier_layer(self) -> nn.Linear:
        raise NotImplementedError


class WrappedModel(ZooModel):
    """A ZooModel around another module (``self.model``) whose state dict is the wrapped module's own.

    Weight files of the wrapped model (a timm state dict, your own module's) load strictly, and what
    this wrapper saves (``student.pth``, Lightning checkpoints) loads into the bare model: the ``model.``
    prefix of the wrapper's parameter names is dropped on saving and added on loading.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_state_dict_post_hook(_drop_model_prefix)
        self.register_load_state_dict_pre_hook(_add_model_prefix)


def _drop_model_prefix(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    inner = prefix + "model."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _add_model_prefix(module: nn.Module, state: Mapping[str, Any], prefix: str, *args: Any) -> None:
    """Every key of the wrapped model gets the ``model.`` prefix back, also one of a submodule of its own named
    ``model``; only a key already written with the prefix (``model.<a key of the wrapped model>``) keeps it."""
    inner, own = prefix + "model.", module.model.state_dict().keys()
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest in own or not (rest.startswith("model.") and rest.removeprefix("model.") in own):
            state[inner + rest] = state.pop(key)

"""Your own ``nn.Module`` as a zoo model, its features read by forward hooks on named submodules ("taps").

No subclassing: ``create_model("my_pkg.MyNet", num_classes=10, taps={"classifier": "fc",
"features": ["layer1", "layer2", "layer3"]})`` imports ``MyNet``, builds it with ``num_classes`` and reads

- logits: what ``module(x)`` returns (a tensor [B, num_classes]);
- embedding: the output of ``taps.embedding``, flattened to [B, D]; without it, the input of
  ``taps.classifier``;
- classifier (PCKD's category centers): ``taps.classifier``, when it is an ``nn.Linear``;
- feature maps: the outputs of ``taps.features``, each [B, C, H, W].

Names are those of ``module.named_modules()`` (``head.pool``, ``layer1``, ``blocks.3``). The module is checked
once at construction, on a probe image of ``input_size`` pixels and ``in_channels`` channels (32 and 3 unless
the taps say otherwise): a missing name, logits of another width than ``num_classes``, a feature tap whose
output is not a [B, C, H, W] map, or a tap whose output the forward changes afterwards in place (a ReLU with
``inplace=True``, ``out += x``) or that runs more than once are refused there. Without ``with_features`` the
module runs as it is (the hooks return at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.models.base import Capability, ModelOutput, WrappedModel
from pckd_lightning.modes import eval_mode

TAPS = ("embedding", "features", "classifier")
#: the probe image's size, beside the taps (a model built for 224 px, or for one channel, says so here)
PROBE = ("input_size", "in_channels")


class TappedModel(WrappedModel):
    """``model`` with its embedding, classifier and feature maps read from the submodules the taps name."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        embedding: str | None = None,
        features: Sequence[str] = (),
        classifier: str | None = None,
        input_size: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__(model)
        self.name = type(model).__name__
        self.num_classes = num_classes
        modules = dict(model.named_modules())
        wanted = [t for t in (embedding, classifier, *features) if t is not None]
        unknown = [t for t in wanted if t not in modules]
        if unknown:
            raise ConfigError(
                f"{self.name} has no submodule(s) {unknown} to tap; its named modules: "
                f"{[n for n in modules if n][:40]}"
            )
        self.taps = {"embedding": embedding, "features": list(features), "classifier": classifier}
        self.feature_dim, self.capabilities = self._probe(input_size, in_channels)

    @torch.no_grad()
    def _probe(self, input_size: int, in_channels: int) -> tuple[int, frozenset[Capability]]:
        """One forward on a random image (in eval mode, every mode restored): the embedding's width and what the
        taps give, or an error naming the tap whose output does not fit."""
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(0)  # not the global stream: building a model draws nothing
        probe = torch.randn(2, in_channels, input_size, input_size, generator=generator).to(device)
        try:
            with eval_mode(self):
                out = self._forward_features(probe, check=True)
        except ConfigError:  # the taps' own findings (a ValueError too): they name their fix
            raise
        except (RuntimeError, AssertionError, ValueError) as err:  # the image does not fit the model
            raise ConfigError(
                f"{self.name} cannot run a probe image of {in_channels}x{input_size}x{input_size} "
                f"({type(err).__name__}: {str(err).strip().splitlines()[0]}); give the size it takes as "
                "model.<role>.taps.input_size and taps.in_channels"
            ) from err
        if out.logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"{self.name} returns {out.logits.shape[1]} logits per image, but the data has {self.num_classes} "
                "classes: build its classifier with the num_classes your constructor is given"
            )
        bad = [
            f"{name} gives {tuple(stage.shape)}"
            for name, stage in zip(self.taps["features"], out.stages, strict=True)
            if stage.ndim != 4
        ]
        if bad:
            raise ConfigError(
                f"{self.name}: taps.features must name submodules whose outputs are [B, C, H, W] maps, but "
                f"{'; '.join(bad)}; tap the layers that output maps (a transformer's token sequences are not)"
            )
        capabilities = {Capability.LOGITS}
        width = 0 if out.pooled is None else out.pooled.shape[1]
        if out.pooled is not None:
            capabilities.add(Capability.EMBEDDING)
        head = self.model.get_submodule(self.taps["classifier"]) if self.taps["classifier"] else None
        if isinstance(head, nn.Linear) and head.in_features == width:
            capabilities.add(Capability.CLASSIFIER)
        if len(out.stages) >= 2:
            capabilities.add(Capability.FEATURE_MAPS)
        return width, frozenset(capabilities)

    def lacks(self, capability: Capability) -> str:
        fix = {
            Capability.EMBEDDING: "set model.<role>.taps.embedding (the module whose output is the classifier's "
            "input, e.g. the pooling) or taps.classifier",
            Capability.CLASSIFIER: "set model.<role>.taps.classifier to the final nn.Linear over the embedding",
            Capability.FEATURE_MAPS: "set model.<role>.taps.features to two or more modules that output "
            "[B, C, H, W] maps, stem first (e.g. [stem,layer1,layer2,layer3])",
        }
        return f"{self.name} (taps {self.taps}) does not give its {capability.value}: {fix[capability]}"

    @property
    def classifier_layer(self) -> nn.Linear:
        if Capability.CLASSIFIER not in self.capabilities:
            raise ConfigError(self.lacks(Capability.CLASSIFIER))
        return self.model.get_submodule(self.taps["classifier"])

    def forward(self, x: torch.Tensor, with_features: bool = False) -> torch.Tensor | ModelOutput:
        return self.forward_features(x) if with_features else self.model(x)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        return self._forward_features(x, check=False)

    def _forward_features(self, x: torch.Tensor, check: bool) -> ModelOutput:
        """The forward with the taps recorded; ``check``: refuse a tap whose output is changed in place after
        it was recorded, or that runs more than once (its last call would be read)."""
        recorded: dict[str, torch.Tensor] = {}
        copies: dict[str, list[torch.Tensor]] = {}

        def keep(name: str, value: torch.Tensor) -> None:
            recorded[name] = value
            if check:
                copies.setdefault(name, []).append(value.detach().clone())

        # hooks for this call only: the plain forward runs untouched, and a copied model holds none
        handles = [
            self.model.get_submodule(name).register_forward_hook(lambda m, a, out, n=name: keep(n, out))
            for name in [self.taps["embedding"], *self.taps["features"]]
            if name is not None
        ]
        if self.taps["embedding"] is None and self.taps["classifier"] is not None:
            name = self.taps["classifier"]
            hook = self.model.get_submodule(name).register_forward_pre_hook(lambda m, a: keep(name, a[0]))
            handles.append(hook)
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ConfigError(
                f"{self.name}(x) must return the logits, a [B, num_classes] tensor; got "
                f"{type(logits).__name__}{tuple(logits.shape) if isinstance(logits, torch.Tensor) else ''}"
            )
        if check:
            self._check_recorded(recorded, copies)
        source = self.taps["embedding"] or self.taps["classifier"]
        pooled = recorded[source].flatten(1) if source is not None else None
        return ModelOutput(
            stages=[recorded[name] for name in self.taps["features"]], pooled=pooled, logits=logits
        )

    def _check_recorded(
        self, recorded: dict[str, torch.Tensor], copies: dict[str, list[torch.Tensor]]
    ) -> None:
        """Each tap ran once, and its output still holds what it returned (the probe's random image makes an
        in-place ReLU or sum change it)."""
        for name, seen in copies.items():
            if len(seen) > 1:
                raise ConfigError(
                    f"{self.name}: tap {name!r} runs {len(seen)} times in one forward, so only its last output "
                    "would be read; tap a module that runs once (e.g. the block that holds it)"
                )
            if not torch.equal(recorded[name].nan_to_num(), seen[0].nan_to_num()):  # NaN != NaN
                raise ConfigError(
                    f"{self.name}: the output of tap {name!r} is changed in place later in the forward (e.g. "
                    "by a ReLU(inplace=True) or out += x), so the recorded feature would not be its output; "
                    "tap the module that makes the final value (e.g. the activation after it)"
                )

"""timm's architectures as zoo models: ``create_model("timm:<name>", num_classes, kwargs={...})``.

Every output is read through timm's own API, so no architecture is special-cased here:

- logits: ``forward_head(final)``, the model's own classification path (``model(x)`` without features);
- embedding (``ModelOutput.pooled``): ``forward_head(final, pre_logits=True)``, the classifier's input;
- classifier (``classifier_layer``, PCKD's category centers): ``get_classifier()``, when it is an
  ``nn.Linear`` over that embedding;
- feature maps (``ModelOutput.stages``): ``forward_intermediates(x, indices=stages, output_fmt="NCHW")``,
  one map per ``feature_info`` entry (or per entry of ``stages``). A CNN's are its stage outputs (the stem
  first, as the zoo's); a ViT's are its blocks' token maps, which timm lays out on the patch grid: the
  prefix tokens (class, registers) are dropped and the patch tokens reshaped to [B, D, H/p, W/p]. The
  feature-map methods (FitNet, AT, NST, VID, SP, FT, AB, FSP, ReviewKD) read these; the others never do.

``final`` is the last output of the same ``forward_intermediates`` pass (``forward_features`` of the model),
so a step runs the network once. The state dict is timm's own (see :class:`WrappedModel`): timm weight
files load strictly, and a trained student's ``student.pth`` loads into ``timm.create_model``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.models.base import Capability, ModelOutput, WrappedModel

log = logging.getLogger(__name__)

PREFIX = "timm:"
#: what the inputs are normalized with: the data set's statistics, or those the pretrained weights expect
NORMALIZATIONS = ("data", "pretrained_cfg")


class TimmModel(WrappedModel):
    """A timm model with the zoo's interface.

    ``stages``: which ``feature_info`` entries are the feature maps (``forward_intermediates``'s
    ``indices``; default all). ``normalize``: the inputs arrive normalized with the data set's mean/std;
    ``pretrained_cfg`` converts them, inside the model, to the normalization its pretrained weights expect
    (``timm.data.resolve_data_config``), so teacher and student may each expect their own. The default
    (null) is ``pretrained_cfg`` with ``pretrained=true`` and ``data`` otherwise (weights trained here).
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        kwargs: Mapping[str, Any] | None = None,
        pretrained: bool = False,
        stages: Sequence[int] | None = None,
        normalize: str | None = None,
    ) -> None:
        import timm

        options = dict(kwargs or {})
        if "num_classes" in options or "pretrained" in options:
            raise ConfigError(
                f"timm:{name}: kwargs may not set num_classes (the data set's) or pretrained "
                "(model.<role>.pretrained); remove them from model.<role>.kwargs"
            )
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('.')[0][:5]}*")[:10]
            raise ConfigError(
                f"timm has no model {name!r} (timm {timm.__version__}); similar names: {close}. "
                "timm.list_models('*pattern*') lists them all"
            )
        if normalize not in (None, *NORMALIZATIONS):
            raise ConfigError(
                f"timm:{name}: normalize={normalize!r}; valid values: {', '.join(NORMALIZATIONS)} or null"
            )
        if pretrained:
            model = _pretrained(name, num_classes, options)
        else:
            try:
                model = timm.create_model(name, num_classes=num_classes, **options)
            except TypeError as err:  # an option the architecture does not take
                raise ConfigError(f"timm:{name}: {err}; check model.<role>.kwargs") from None
        super().__init__(model)
        self.name = name
        self.stage_indices = None if stages is None else list(stages)
        self.normalize = normalize or ("pretrained_cfg" if pretrained else "data")
        #: the input normalization and size timm resolves for the weights (``resolve_data_config``)
        self.data_config = timm.data.resolve_data_config(model=model)
        self.register_buffer("_input_scale", torch.ones(()), persistent=False)
        self.register_buffer("_input_shift", torch.zeros(()), persistent=False)
        self._converts_input = False
        classifier = model.get_classifier()
        #: the pre-logits width: timm's head_hidden_size (num_features where the model has no head MLP)
        self.feature_dim = getattr(model, "head_hidden_size", model.num_features)
        capabilities = {Capability.LOGITS, Capability.EMBEDDING}
        if isinstance(classifier, nn.Linear) and classifier.in_features == self.feature_dim:
            capabilities.add(Capability.CLASSIFIER)
        if hasattr(model, "forward_intermediates") and len(self._stage_names()) >= 2:
            capabilities.add(Capability.FEATURE_MAPS)
        self.capabilities = frozenset(capabilities)

    def _stage_names(self) -> list[str]:
        info = getattr(self.model, "feature_info", None) or []
        names = [f.get("module", str(i)) for i, f in enumerate(info)]
        if self.stage_indices is None:
            return names
        bad = [i for i in self.stage_indices if not -len(names) <= i < len(names)]
        if bad:
            raise ConfigError(
                f"timm:{self.name}: stages {bad} do not exist; it has {len(names)} feature_info entries "
                f"({names}); set model.<role>.stages to indices among them"
            )
        return [names[i] for i in self.stage_indices]

    def lacks(self, capability: Capability) -> str:
        if capability is Capability.CLASSIFIER:
            head = type(self.model.get_classifier()).__name__
            return (
                f"timm:{self.name}'s get_classifier() is a {head}, not an nn.Linear over its "
                f"{self.feature_dim}-wide pre-logits embedding, so it has no category centers"
            )
        if capability is Capability.FEATURE_MAPS:
            if not hasattr(self.model, "forward_intermediates"):
                return f"timm:{self.name} has no forward_intermediates(), so it gives no feature maps"
            return (
                f"timm:{self.name} gives {len(self._stage_names())} feature map(s) "
                f"({self._stage_names()}); set model.<role>.stages to two or more feature_info indices"
            )
        return super().lacks(capability)

    @property
    def classifier_layer(self) -> nn.Linear:
        if Capability.CLASSIFIER not in self.capabilities:
            raise ConfigError(self.lacks(Capability.CLASSIFIER))
        return self.model.get_classifier()

    def adapt_to_data(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Convert inputs normalized with the data's ``mean``/``std`` to the pretrained weights' own
        (``normalize: pretrained_cfg``): ``x' = (x · std + mean − mean_w) / std_w``, per channel."""
        if self.normalize != "pretrained_cfg":
            return
        data_mean, data_std = torch.tensor(mean), torch.tensor(std)
        own_mean, own_std = torch.tensor(self.data_config["mean"]), torch.tensor(self.data_config["std"])
        device = self._input_scale.device
        self._input_scale = (data_std / own_std).view(1, -1, 1, 1).to(device)
        self._input_shift = ((data_mean - own_mean) / own_std).view(1, -1, 1, 1).to(device)
        self._converts_input = not (torch.allclose(data_mean, own_mean) and torch.allclose(data_std, own_std))
        log.info(
            "timm:%s: inputs converted from the data's mean %s std %s to its pretrained_cfg's mean %s std %s",
            self.name,
            tuple(mean),
            tuple(std),
            self.data_config["mean"],
            self.data_config["std"],
        )

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._input_shift, x, self._input_scale) if self._converts_input else x

    def forward(self, x: torch.Tensor, with_features: bool = False) -> torch.Tensor | ModelOutput:
        return self.forward_features(x) if with_features else self.model(self._inputs(x))

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = self._inputs(x)
        if Capability.FEATURE_MAPS in self.capabilities:
            final, stages = self.model.forward_intermediates(x, indices=self.stage_indices, output_fmt="NCHW")
        else:
            final, stages = self.model.forward_features(x), []
        return ModelOutput(
            stages=list(stages),
            pooled=self.model.forward_head(final, pre_logits=True),
            logits=self.model.forward_head(final),
        )


def create_timm_model(name: str, num_classes: int = 100, **options: Any) -> TimmModel:
    """``timm:<name>`` of :func:`~pckd_lightning.models.create_model`: a :class:`TimmModel`."""
    return TimmModel(name[len(PREFIX) :], num_classes, **options)


def _pretrained(name: str, num_classes: int, options: dict[str, Any]) -> nn.Module:
    """timm's own pretrained loading (its cache, then the Hugging Face Hub or the weights' URL); refused with
    the ways out when the weights are neither cached nor reachable."""
    import timm

    source = timm.models.get_pretrained_cfg(name)
    host = None
    if source is not None:
        host = "huggingface.co" if source.hf_hub_id else urlparse(source.url or "").hostname
    if host is None:
        raise ConfigError(
            f"timm has no pretrained weights for {name!r} (its pretrained_cfg names no source); set "
            "pretrained=false, or give a weight file with model.<role>.checkpoint"
        )
    online = reachable(host)
    try:
        with _hub_offline(not online):
            return timm.create_model(name, pretrained=True, num_classes=num_classes, **options)
    except (OSError, RuntimeError) as err:  # not cached and offline, a failed download, a broken file
        where = "are not in timm's local cache and " + (
            f"{host} cannot be reached (no network?)" if not online else f"could not be fetched from {host}"
        )
        raise CheckpointError(
            f"pretrained=true: the weights of timm:{name} {where} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}). Download them where there is a network "
            f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\" fills the cache), "
            "or save a state dict (.pth or .safetensors) and set model.teacher.checkpoint to it, or set "
            "pretrained=false"
        ) from None


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds (a hub's retries take a minute)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_offline(offline: bool):
    """The Hugging Face Hub in offline mode (local cache only) while ``offline``: a fast refusal, not a
    minute of retries."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before

"""A name -> constructor registry, so configs and notebooks build any model with ``create_model``.

Besides the zoo's registered names, ``create_model`` builds ``timm:<name>`` (any timm architecture, see
:mod:`pckd_lightning.models.timm_models`) and ``package.module.Name`` (your own ``nn.Module`` class or
function, its features read through ``taps``, see :mod:`pckd_lightning.models.tapped`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.models.base import ZooModel

_REGISTRY: dict[str, Callable[..., ZooModel]] = {}


def register_model(fn: Callable[..., ZooModel]) -> Callable[..., ZooModel]:
    """Register a constructor under its function name (e.g. ``resnet8x4``)."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def unregister_model(name: str) -> None:
    """Forget a registered name (a model defined again in a notebook, a test restoring the zoo)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    del _REGISTRY[name]


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(
    name: str, num_classes: int = 100, taps: Mapping[str, Any] | None = None, **kwargs: Any
) -> ZooModel:
    """Build a registered model, a ``timm:<name>`` or an importable ``package.Name`` (called with
    ``num_classes`` and ``kwargs``; a plain ``nn.Module`` is wrapped, its ``taps`` read by hooks).

    An unknown name raises an error listing the valid ones.
    """
    from pckd_lightning.models.tapped import PROBE, TAPS, TappedModel
    from pckd_lightning.models.timm_models import PREFIX, create_timm_model

    if name.startswith(PREFIX):
        model = create_timm_model(name, num_classes=num_classes, **kwargs)
    elif name in _REGISTRY:
        model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    elif "." in name:
        build = _import(name)
        try:
            inspect.signature(build).bind(num_classes=num_classes, **kwargs)
        except TypeError as err:  # the options do not fit its signature (an error inside it is its own)
            raise ConfigError(
                f"{name}(num_classes={num_classes}, **{kwargs}) does not fit its signature ({err}); your model "
                "must take num_classes (the data set's), and its other config keys as keyword arguments"
            ) from None
        except ValueError:  # no signature to read (a builtin): the call tells
            pass
        model = build(num_classes=num_classes, **kwargs)
    else:
        raise ConfigError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}, timm:<any timm model> "
            "or the import path of your own nn.Module (package.module.Name)"
        )
    if isinstance(model, ZooModel):
        if taps:
            raise ConfigError(f"model {name!r} gives its features itself; remove its taps")
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name} built a {type(model).__name__}, not an nn.Module")
    unknown = sorted(set(taps or {}) - {*TAPS, *PROBE})
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown taps {unknown}; valid taps: {', '.join(TAPS)} (and the probe image's "
            f"{', '.join(PROBE)})"
        )
    return TappedModel(model, num_classes, **(taps or {}))


def model_name(node: Mapping[str, Any]) -> str | None:
    """The architecture a model config builds, for summaries and reports: its ``name`` (the zoo's, ``timm:...``,
    an import path), else its own module's ``_target_``."""
    name = node.get("name") or node.get("_target_")
    return None if name is None else str(name)


def model_config(node: DictConfig) -> DictConfig:
    """A model config to instantiate with ``num_classes``: ``{_target_: my_pkg.MyNet, taps: ..., ...}`` (your
    own module) becomes ``create_model(name="my_pkg.MyNet", taps=..., ...)``, which wraps it; the library's
    builders (``create_model``, ``load_teacher``) are kept as they are."""
    target = node.get("_target_")
    if not isinstance(target, str) or target.startswith("pckd_lightning."):
        return node
    rewritten = OmegaConf.to_container(node, resolve=True)
    rewritten["name"] = rewritten.pop("_target_")
    return OmegaConf.create({"_target_": f"{__name__}.create_model", **rewritten})


def _import(path: str) -> Callable[..., Any]:
    try:
        return get_object(path)
    except Exception as err:  # ImportError, AttributeError: one meaning for the user
        raise ConfigError(
            f"cannot import model {path!r} ({type(err).__name__}: {err}); check the path and that its "
            "package is on PYTHONPATH"
        ) from None

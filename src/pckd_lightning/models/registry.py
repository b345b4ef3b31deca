"""A name -> constructor registry, so configs and notebooks build any model with ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

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


def create_model(name: str, num_classes: int = 100, **kwargs) -> ZooModel:
    """Build a registered model; an unknown name raises an error listing the valid ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)

"""The preview weights in a run config: what builds them, which terms ``+preview=all`` marks, what is refused
before a run starts and how the configs of earlier versions read now.

``distill.preview`` is built by the config group ``conf/preview/`` (``preview@distill.preview=default`` or
``progress``; ``distill/pckd.yaml`` selects ``default``); ``+preview=all`` (``conf/preview/all.yaml``) sets
``distill.preview_every_term``, which marks every per-sample term but ``ce``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.errors import ConfigError
from pckd_lightning.preview.weights import PreviewWeights
from pckd_lightning.schema.fields import Group, Number

#: what ``conf/preview/`` builds
TARGET = "pckd_lightning.preview.PreviewWeights"
#: what earlier versions built: a callback, then the weights in the losses package
EARLIER_TARGETS = ("pckd_lightning.callbacks.PreviewWeighting", "pckd_lightning.losses.PreviewWeights")
#: the switch ``+preview=all`` sets in ``distill``
EVERY_TERM = "preview_every_term"


class PreviewOptions(Group):
    """``distill.preview``'s values checked with the run config's (:mod:`pckd_lightning.schema.groups`); the
    rest when :func:`check` builds the weights."""

    base: Number(0, low_open=True) | None = None


def marked_by_preview_all(distill: Mapping[str, Any], name: str, target: str | type) -> bool:
    """Whether ``+preview=all`` (``distill.preview_every_term``) weights the term ``name`` built from ``target``:
    every per-sample term but ``ce``, the loss that measures the difficulty."""
    if not distill.get(EVERY_TERM, False) or name == "ce":
        return False
    return (get_class(target) if isinstance(target, str) else target).per_sample


def check_marked(marked: Sequence[str], weights: PreviewWeights | None) -> None:
    """Refuse terms marked ``preview: true`` with no weights to multiply them by."""
    if marked and weights is None:
        raise ConfigError(
            f"loss terms {list(marked)} are marked preview: true, but no preview weights are configured; set "
            "distill.preview (e.g. distill=pckd, or +preview=all) or set preview: false on those terms"
        )


def check(cfg: DictConfig) -> None:
    """Before any work: ``distill.preview`` builds :class:`PreviewWeights` with known options, and its last
    threshold is a finite float32 over ``trainer.max_epochs``."""
    preview = cfg.distill.get("preview")
    if preview is None:
        return
    target = preview.get("_target_") if isinstance(preview, DictConfig) else None
    if target is None or not issubclass(get_class(target), PreviewWeights):
        raise ConfigError(
            f"distill.preview must build {TARGET} (got _target_ {target!r}); select preview@distill.preview="
            "default, or write distill.preview: {_target_: " + TARGET + ", base: 1.005} (the preview "
            "weighting's callback is added by the module itself)"
        )
    options = {k: v for k, v in OmegaConf.to_container(preview, resolve=True).items() if k != "_target_"}
    valid = list(inspect.signature(PreviewWeights).parameters)
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise ConfigError(
            f"distill.preview: unknown option(s) {unknown} for {target}; valid options: {valid}"
        )
    get_class(target)(**options).set_max_epochs(cfg.trainer.max_epochs)


def fixed_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """What a resume must keep beyond ``distill`` for these weights: the progress schedule's thresholds
    follow ``trainer.max_epochs``."""
    preview = (config.get("distill") or {}).get("preview") or {}
    return ("trainer.max_epochs",) if preview.get("schedule") == "progress" else ()


def upgrade_target(distill: dict[str, Any]) -> bool:
    """An earlier target of the weights (:data:`EARLIER_TARGETS`) becomes :data:`TARGET`; whether it did."""
    preview = distill.get("preview")
    if not isinstance(preview, dict) or preview.get("_target_") not in EARLIER_TARGETS:
        return False
    preview["_target_"] = TARGET
    return True


def upgrade_schedule(distill: dict[str, Any]) -> bool:
    """Weights written before their schedule was an option get the default one spelt out; whether they did."""
    preview = distill.get("preview")
    if not isinstance(preview, dict):
        return False
    defaults = inspect.signature(PreviewWeights).parameters
    missing = {key: defaults[key].default for key in ("schedule", "reference_epochs") if key not in preview}
    preview.update(missing)
    return bool(missing)


def spell_out_every_term(distill: dict[str, Any]) -> None:
    """``+preview=all``'s switch spelt out as ``preview: true`` on the terms it marks: the one form configs are
    compared in, as the earliest versions wrote them (this version's shorthand: no upgrade, no warning)."""
    for name, term in (distill.get("terms") or {}).items():
        if isinstance(term, dict) and marked_by_preview_all(distill, name, term["_target_"]):
            term["preview"] = True
    distill.pop(EVERY_TERM, None)

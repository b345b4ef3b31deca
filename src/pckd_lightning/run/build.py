"""What a checked config builds: the data module's companions (the networks, the loss terms read by signature,
the DistillationModule), the callbacks and the trainer."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from pckd_lightning import preview
from pckd_lightning.callbacks.best_score import KeepBestScore
from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.errors import ConfigError, PCKDError
from pckd_lightning.losses import LossTerm
from pckd_lightning.models import model_config
from pckd_lightning.run.cache import build_teacher_cache


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """Hydra's instantiate, but our own errors (which name the problem and the fix) come out unwrapped."""
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, PCKDError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _check_options(path: str, cfg: DictConfig) -> None:
    """Name a misspelt option and list the valid ones (Hydra would only report a TypeError)."""
    target = get_class(cfg._target_) if isinstance(cfg._target_, str) else cfg._target_
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [name for name in parameters if name != "self"]
    unknown = [key for key in cfg if not key.startswith("_") and key not in valid]
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {unknown} for {cfg._target_}; valid options: {valid}")


def build_terms(distill_cfg: DictConfig) -> dict[str, LossTerm]:
    """Instantiate ``distill.terms``; a term set to null is left out (that is how a term is removed).

    With ``distill.preview_every_term`` (``+preview=all``) every per-sample term but ``ce`` is preview-weighted.
    """
    terms = {}
    for name, term_cfg in distill_cfg.terms.items():
        if term_cfg is None:
            continue
        if "_target_" not in term_cfg:
            raise ConfigError(f"distill.terms.{name} has no _target_; give the LossTerm class to build")
        _check_options(f"distill.terms.{name}", term_cfg)
        marked = preview.marked_by_preview_all(distill_cfg, name, term_cfg._target_)
        terms[name] = instantiate(term_cfg, **({"preview": True} if marked else {}))
    return terms


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> DistillationModule:
    """``module`` (conf/module/) with what only the data and the models give: the networks, terms and labels."""
    num_classes = datamodule.num_classes
    teacher = None
    if cfg.model.get("teacher") is not None:
        teacher = instantiate(model_config(cfg.model.teacher), num_classes=num_classes)
    terms = build_terms(cfg.distill)
    return instantiate(
        cfg.module,
        student=instantiate(model_config(cfg.model.student), num_classes=num_classes),
        teacher=teacher,
        terms=terms,
        num_classes=num_classes,
        train_labels=torch.as_tensor(datamodule.train_labels),
        teacher_cache=build_teacher_cache(cfg, datamodule, teacher, terms),
    )


def build_callbacks(cfg: DictConfig, record: RunConfigRecord | None = None) -> list[L.Callback]:
    """The run's callbacks plus the method's own (``distill.callbacks``; the module adds its preview scheduler).

    A progress bar redraws one line, which a batch system's log file keeps only the end of: when stdout is
    not a terminal it is left out (the per-epoch lines of :class:`EpochLineLogger` take its place).
    """
    configured = [*(cfg.get("callbacks") or {}).values(), *(cfg.distill.get("callbacks") or {}).values()]
    callbacks = [instantiate(c) for c in configured if c is not None]
    if not sys.stdout.isatty():
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks.append(KeepBestScore())  # a resume into another folder keeps its best checkpoint's score
    return callbacks if record is None else [*callbacks, record]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    """``trainer`` with the run's callbacks and loggers; BatchNorm is synchronized by the module itself, and
    ``logger.log_every_n_steps`` also sets how often Lightning hands per-step values to the loggers."""
    every = (cfg.get("logger") or {}).get("log_every_n_steps")
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers,
        sync_batchnorm=False,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        **({} if every is None else {"log_every_n_steps": every}),
    )

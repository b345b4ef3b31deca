"""Turns a composed config into a finished run: data, models, loss terms, trainer, summary.

Kept apart from the Hydra entry point so notebooks and tests can call :func:`fit` with a config
composed by ``hydra.compose`` (or any DictConfig of the same shape).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from pckd_lightning.distillation import DistillationModule
from pckd_lightning.errors import ConfigError, PCKDError
from pckd_lightning.losses import LossTerm

log = logging.getLogger(__name__)

# The frozen teacher is in eval mode on purpose; Lightning would warn about it at every fit.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


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
    """Instantiate ``distill.terms``; a term set to null is left out (that is how a term is removed)."""
    terms = {}
    for name, term_cfg in distill_cfg.terms.items():
        if term_cfg is None:
            continue
        if "_target_" not in term_cfg:
            raise ConfigError(f"distill.terms.{name} has no _target_; give the LossTerm class to build")
        _check_options(f"distill.terms.{name}", term_cfg)
        terms[name] = instantiate(term_cfg)
    return terms


def apply_preview_switch(cfg: DictConfig) -> None:
    """``+preview=true`` preview-weights any method: every per-sample term but ``ce`` gets ``preview: true``."""
    if not cfg.get("preview"):
        return
    with open_dict(cfg):
        for name, term_cfg in cfg.distill.terms.items():
            if term_cfg is not None and name != "ce" and get_class(term_cfg._target_).per_sample:
                term_cfg.preview = True
        if cfg.distill.get("preview") is None:
            cfg.distill.preview = {"_target_": "pckd_lightning.callbacks.PreviewWeighting", "base": 1.005}


def check_config(cfg: DictConfig) -> None:
    """Cross-group consistency that no single group can check by itself."""
    data_views, method_views = cfg.data.get("views"), cfg.distill.get("views")
    if data_views is not None and method_views is not None and data_views != method_views:
        raise ConfigError(
            f"data.views={data_views} but distill={cfg.distill.get('name')} expects views={method_views}; "
            "leave data.views at its default (${distill.views}) or set both to the same value"
        )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The run's callbacks plus the method's own (its preview weighting and any ``distill.callbacks``)."""
    configured = [*(cfg.get("callbacks") or {}).values(), *(cfg.distill.get("callbacks") or {}).values()]
    callbacks = [instantiate(c) for c in configured if c is not None]
    if cfg.distill.get("preview") is not None:
        callbacks.append(instantiate(cfg.distill.preview))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The configured loggers, each given the resolved config as its hyper-parameters."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def close_loggers(loggers: list[Any], summary: dict[str, Any]) -> None:
    """Put the run's results in each logger's summary and close W&B runs (one run per job of a multirun)."""
    if rank_zero_only.rank != 0:
        return
    results = {
        k: summary[k]
        for k in ("best_top1", "last_top1", "last_top5", "teacher_top1")
        if summary[k] is not None
    }
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(results)
            logger.experiment.finish()
        else:
            logger.log_metrics({f"summary/{k}": v for k, v in results.items()})
            logger.save()


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> DistillationModule:
    num_classes = datamodule.num_classes
    student = instantiate(cfg.model.student, num_classes=num_classes)
    teacher = None
    if cfg.model.get("teacher") is not None:
        teacher = instantiate(cfg.model.teacher, num_classes=num_classes)
    performance, teacher_options = cfg.get("performance") or {}, cfg.get("teacher") or {}
    return DistillationModule(
        student=student,
        teacher=teacher,
        terms=build_terms(cfg.distill),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") is not None else None,
        num_classes=num_classes,
        teacher_min_accuracy=teacher_options.get("min_accuracy"),
        teacher_float32=teacher_options.get("float32", False),
        train_labels=torch.as_tensor(datamodule.train_labels),
        # done by the module (on CPU too), not by Lightning, whose SyncBatchNorm needs CUDA
        sync_batchnorm=cfg.trainer.get("sync_batchnorm", False),
        channels_last=performance.get("channels_last", False),
        compile_models=performance.get("compile", False),
        compile_losses=performance.get("compile_losses", False),
        compile_mode=performance.get("compile_mode"),
        scale_lr_with_world_size=cfg.get("lr_scaling", "none") == "linear",
    )


def teacher_training_config(cfg: DictConfig) -> DictConfig:
    """The config that trains ``model.teacher``'s architecture from scratch (used by the demo)."""
    recipe = cfg.model.train_teacher_if_missing
    teacher_cfg = cfg.copy()
    with open_dict(teacher_cfg):
        teacher_cfg.model.student = {
            "_target_": "pckd_lightning.models.create_model",
            "name": cfg.model.teacher.name,
        }
        teacher_cfg.model.teacher = None
        teacher_cfg.model.train_teacher_if_missing = None
        teacher_cfg.distill = {
            "name": "ce",
            "views": 1,
            "preview": None,
            "terms": {"ce": {"_target_": "pckd_lightning.losses.CrossEntropyTerm"}},
        }
        teacher_cfg.trainer.max_epochs = recipe.max_epochs
        # one process: DDP workers re-run the script and must find the teacher already written
        teacher_cfg.trainer.update(
            {"devices": 1, "num_nodes": 1, "strategy": "auto", "sync_batchnorm": False}
        )
        teacher_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "teacher")
        teacher_cfg.export_path = cfg.model.teacher.checkpoint
        teacher_cfg.ckpt_path = None  # a resume refers to the distillation run, not to the teacher's
    return teacher_cfg


def ensure_teacher(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and cache the teacher when the config asks for it and its checkpoint does not exist yet."""
    teacher = cfg.model.get("teacher")
    if teacher is None or cfg.model.get("train_teacher_if_missing") is None:
        return None
    if Path(teacher.checkpoint).is_file():
        log.info("teacher checkpoint found at %s: skipping teacher training", teacher.checkpoint)
        return None
    log.info("no teacher at %s: training %s from scratch first", teacher.checkpoint, teacher.name)
    return fit(teacher_training_config(cfg))


def export_student(module: DistillationModule, path: str | Path) -> Path:
    """Write the student as ``{"model": state_dict}`` (the layout teachers are loaded from), atomically."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": module.student.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def _percent(trainer: L.Trainer, name: str) -> float | None:
    """A logged accuracy (a fraction) as a percentage, or None when it was never logged."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else 100.0 * float(value)


def checkpoint_paths(trainer: L.Trainer) -> tuple[str | None, str | None]:
    """The best (monitored) and the last (latest epoch) checkpoint files of the run."""
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor is not None:
            best = callback.best_model_path or best
        else:
            last = callback.last_model_path or callback.best_model_path or last
    return best, last


def summarize(cfg: DictConfig, trainer: L.Trainer, module: DistillationModule, student_path: Path) -> dict:
    best_checkpoint, last_checkpoint = checkpoint_paths(trainer)
    summary = {
        "method": cfg.distill.get("name"),
        "student": cfg.model.student.get("name"),
        "teacher": None if cfg.model.get("teacher") is None else cfg.model.teacher.name,
        "seed": cfg.get("seed"),
        "epochs": trainer.current_epoch,
        "teacher_top1": module.teacher_top1,
        "teacher_checkpoint": getattr(module.teacher, "checkpoint_path", None),
        "teacher_sha256": getattr(module.teacher, "checkpoint_sha256", None),
        "best_top1": _percent(trainer, "val/top1_best"),
        "last_top1": _percent(trainer, "val/top1"),
        "last_top5": _percent(trainer, "val/top5"),
        "skipped_terms": module.skipped_terms,
        "terms": {name: term.weight for name, term in module.terms.items()},
        "output_dir": str(cfg.paths.output_dir),
        "student_weights": str(student_path),
        "best_checkpoint": best_checkpoint,
        "last_checkpoint": last_checkpoint,
    }
    for key in ("best_top1", "last_top1"):
        if summary[key] is not None and not math.isfinite(summary[key]):
            raise RuntimeError(f"{key} is not finite ({summary[key]}): the run diverged")
    return summary


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns (and writes) its summary."""
    check_config(cfg)
    apply_preview_switch(cfg)
    teacher_summary = ensure_teacher(cfg)
    # seeded after the (optional) teacher training, so a run does not depend on whether it was cached
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg), logger=loggers or False, sync_batchnorm=False
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    student_path = Path(cfg.get("export_path") or output_dir / "student.pth")
    summary = summarize(cfg, trainer, module, student_path)
    if teacher_summary is not None:
        summary["teacher_training"] = teacher_summary
    if trainer.is_global_zero:  # one writer under DDP
        export_student(module, student_path)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    close_loggers(loggers, summary)
    return summary

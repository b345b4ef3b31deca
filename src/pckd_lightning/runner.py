"""Turns a composed config into a finished run: data, models, loss terms, trainer, summary.

Kept apart from the Hydra entry point so notebooks and tests can call :func:`fit` with a config
composed by ``hydra.compose`` (or any DictConfig of the same shape).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import StrategyRegistry
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from pckd_lightning.atomic import atomic_write_text
from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.config_schema import validate
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.errors import CheckpointError, ConfigError, PCKDError
from pckd_lightning.export import export_state_dict
from pckd_lightning.loggers import EpochLineLogger, RunCSVLogger
from pckd_lightning.losses import LossTerm, PreviewWeights
from pckd_lightning.losses.preview import marked_by_preview_all
from pckd_lightning.models import model_config, model_name
from pckd_lightning.resume import ResumePlan, carry_history, plan_resume
from pckd_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)

#: Lightning warnings that do not apply to these runs, silenced while a run trains (not at import): the frozen
#: teacher is in eval mode on purpose, and the epoch values of train/*, preview/*, val/* and test/* are
#: reduced over the ranks by the module itself (Lightning cannot tell, and would ask for sync_dist under DDP)
KNOWN_WARNINGS = (
    r".*module\(s\) in eval mode at the start of training.*",
    r"It is recommended to use `self\.log\('(train/|preview/|val/top1|val/top5|test/)",
)


@contextmanager
def known_warnings_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


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
    every = distill_cfg.get("preview_every_term", False)
    terms = {}
    for name, term_cfg in distill_cfg.terms.items():
        if term_cfg is None:
            continue
        if "_target_" not in term_cfg:
            raise ConfigError(f"distill.terms.{name} has no _target_; give the LossTerm class to build")
        _check_options(f"distill.terms.{name}", term_cfg)
        marked = every and marked_by_preview_all(name, term_cfg._target_)
        terms[name] = instantiate(term_cfg, **({"preview": True} if marked else {}))
    return terms


def check_strategy(trainer_cfg: DictConfig) -> None:
    """Refuse DDP strategies that start their workers from this process (``ddp_spawn``, ``ddp_notebook``,
    ``ddp_fork``): this process writes the summary, the CSV log and the exported student, but does not train,
    so its summary would say 0 epochs and its logger would overwrite the workers' ``metrics.csv``."""
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, DictConfig):
        name, start_method = strategy.get("_target_"), strategy.get("start_method", "popen")
    else:
        registered = dict.get(StrategyRegistry, strategy, {})  # the entry; StrategyRegistry.get builds one
        name = strategy
        start_method = registered.get("init_params", {}).get("start_method", "popen")
    if start_method != "popen":
        raise ConfigError(
            f"trainer.strategy={name} starts its DDP workers from this process (start_method={start_method}); "
            "the run's summary and logs are written by this process, which does not train, so they would be "
            "wrong or lost. Use trainer.strategy=ddp: pckd-train then starts one process per device "
            "(e.g. trainer=ddp_cpu, or trainer.devices=2); in a notebook, train on one device"
        )


def check_config(cfg: DictConfig) -> None:
    """Cross-group consistency that no single group can check by itself (after :func:`validate`)."""
    check_strategy(cfg.trainer)
    if cfg.distill.get("preview") is not None:  # its schedule must stay finite over trainer.max_epochs
        preview_cfg = cfg.distill.preview
        target = preview_cfg.get("_target_") if isinstance(preview_cfg, DictConfig) else None
        if target is None or not issubclass(get_class(target), PreviewWeights):
            raise ConfigError(
                f"distill.preview must build {PreviewWeights.__module__}.PreviewWeights (got _target_ {target!r}); "
                "write distill.preview: {_target_: pckd_lightning.losses.PreviewWeights, base: 1.005} or select "
                "distill/preview=default (the preview weighting's callback is added by the module itself)"
            )
        instantiate(preview_cfg).set_max_epochs(cfg.trainer.max_epochs)
    data_views, method_views = cfg.data.get("views"), cfg.distill.get("views")
    if data_views is not None and method_views is not None and data_views != method_views:
        raise ConfigError(
            f"data.views={data_views} but distill={cfg.distill.get('name')} expects views={method_views}; "
            "leave data.views at its default (${distill.views}) or set both to the same value"
        )


class RunInterrupted(SystemExit):
    """The run was stopped by a signal; its summary says so. Exits 128 + the signal (143 SIGTERM, 130 SIGINT)."""


def build_callbacks(cfg: DictConfig, record: RunConfigRecord | None = None) -> list[L.Callback]:
    """The run's callbacks plus the method's own (``distill.callbacks``; the module adds its preview scheduler).

    A progress bar redraws one line, which a batch system's log file keeps only the end of: when stdout is
    not a terminal it is left out (the per-epoch lines of :class:`EpochLineLogger` take its place).
    """
    configured = [*(cfg.get("callbacks") or {}).values(), *(cfg.distill.get("callbacks") or {}).values()]
    callbacks = [instantiate(c) for c in configured if c is not None]
    if not sys.stdout.isatty():
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks if record is None else [*callbacks, record]


#: a W&B run folder: ``[offline-]run-<date>_<time>-<id>``, with ``-<n>`` when W&B made a second one
WANDB_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-([a-z0-9]+)(?:-\d+)?$")


def previous_wandb_id(plan: ResumePlan) -> str | None:
    """The W&B run id of the checkpoint's run (in ``<run>/wandb/``), to continue its curves."""
    folders = sorted((plan.run_dir / "wandb").glob("*run-*"))
    ids = [m.group(1) for folder in folders if (m := WANDB_RUN_FOLDER.match(folder.name))]
    return ids[-1] if ids else None


def build_loggers(cfg: DictConfig, resume: ResumePlan | None) -> list[Any]:
    """The configured loggers, the CSV record (always) and the epoch lines, given the resolved config.

    A resumed run appends to its CSV history and continues the checkpoint's W&B run.
    """
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if not isinstance(logger_cfg, DictConfig):  # options such as logger.log_every_n_steps
            continue
        kwargs = {}
        if resume is not None and issubclass(get_class(logger_cfg._target_), WandbLogger):
            run_id = previous_wandb_id(resume)
            kwargs = {"id": run_id, "resume": "allow"} if run_id else {}
        loggers.append(instantiate(logger_cfg, **kwargs))
    if not any(isinstance(logger, CSVLogger) for logger in loggers):
        loggers.insert(0, RunCSVLogger(save_dir=cfg.paths.output_dir, name="csv", version=""))
    for logger in loggers:
        if isinstance(logger, RunCSVLogger):
            logger.append = resume is not None
    loggers.append(EpochLineLogger(max_epochs=cfg.trainer.max_epochs))
    resolved = OmegaConf.to_container(cfg, resolve=True)  # once, for every logger
    for logger in loggers:
        logger.log_hyperparams(resolved)
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
            logger.experiment.summary.update({**results, "status": summary["status"]})
            logger.experiment.finish()
        elif not isinstance(logger, EpochLineLogger):
            logger.log_metrics({f"summary/{k}": v for k, v in results.items()})
            logger.save()


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> DistillationModule:
    """``module`` (conf/module/) with what only the data and the models give: the networks, terms and labels."""
    num_classes = datamodule.num_classes
    teacher = None
    if cfg.model.get("teacher") is not None:
        teacher = instantiate(model_config(cfg.model.teacher), num_classes=num_classes)
    return instantiate(
        cfg.module,
        student=instantiate(model_config(cfg.model.student), num_classes=num_classes),
        teacher=teacher,
        terms=build_terms(cfg.distill),
        num_classes=num_classes,
        train_labels=torch.as_tensor(datamodule.train_labels),
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
        teacher_cfg.seed = recipe.seed  # the teacher's own seed: every student seed shares one teacher
        # one process: DDP workers re-run the script and must find the teacher already written
        teacher_cfg.trainer.update(
            {"devices": 1, "num_nodes": 1, "strategy": "auto", "sync_batchnorm": False}
        )
        teacher_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "teacher")
        teacher_cfg.export_path = cfg.model.teacher.checkpoint
        teacher_cfg.ckpt_path = None  # a resume refers to the distillation run, not to the teacher's
    return teacher_cfg


def ensure_teacher(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and cache the teacher when the config asks for it and its checkpoint does not exist yet.

    Only at the exact cache file ``model.train_teacher_if_missing.checkpoint`` names: any other missing
    file is most likely a typo, and training a teacher at the typo's path would hide it.
    """
    teacher = cfg.model.get("teacher")
    recipe = cfg.model.get("train_teacher_if_missing")
    if teacher is None or recipe is None:
        return None
    path = Path(teacher.checkpoint).expanduser()
    if path.is_file():
        log.info("teacher checkpoint found at %s: skipping teacher training", teacher.checkpoint)
        return None
    cached = Path(recipe.checkpoint).expanduser()
    if path.resolve() != cached.resolve():
        raise CheckpointError(
            f"model.teacher.checkpoint={str(path)!r} does not exist. A teacher is trained automatically only "
            f"at its cache file ({cached}, the default); check the path, or train one first: pckd-train "
            f"model=digits_scratch_resnet8 model.student.name={teacher.name} distill=ce export_path={path}"
        )
    log.info("no teacher at %s: training %s from scratch first", teacher.checkpoint, teacher.name)
    return fit(teacher_training_config(cfg))


def _metric(trainer: L.Trainer, name: str) -> float | None:
    """A logged value (accuracies are in percent), or None when it was never logged."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def checkpoint_paths(trainer: L.Trainer) -> tuple[str | None, str | None]:
    """The best (monitored) and the last (latest epoch) checkpoint files of the run."""
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor is not None:
            best = callback.best_model_path or best
        else:
            last = callback.last_model_path or callback.best_model_path or last
    return best, last


def _selected_classes(datamodule: Any) -> list[int] | None:
    """The original ids of the classes a run kept, in label order; None when it kept all of them."""
    classes = getattr(datamodule, "classes", None)
    if classes is None or len(classes) == datamodule.dataset_classes:
        return None
    return list(classes)


def summarize(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DistillationModule,
    student_path: Path | None,
    status: str = "complete",
) -> dict:
    best_checkpoint, last_checkpoint = checkpoint_paths(trainer)
    summary = {
        "status": status,
        "method": cfg.distill.get("name"),
        "student": model_name(cfg.model.student),
        "teacher": None if cfg.model.get("teacher") is None else cfg.model.teacher.name,
        "seed": cfg.get("seed"),
        "epochs": trainer.current_epoch,
        "teacher_top1": module.teacher_top1,
        "teacher_checkpoint": getattr(module.teacher, "checkpoint_path", None),
        "teacher_sha256": getattr(module.teacher, "checkpoint_sha256", None),
        "best_top1": _metric(trainer, "val/top1_best"),
        "last_top1": _metric(trainer, "val/top1"),
        # the epoch whose validation gave last_top1: the final one (the module validates it), or for an
        # interrupted run the latest validated
        "last_top1_epoch": module.last_validated_epoch,
        "last_top5": _metric(trainer, "val/top5"),
        "skipped_terms": module.skipped_terms,
        "classes": _selected_classes(trainer.datamodule),
        "terms": {name: term.weight for name, term in module.terms.items()},
        "output_dir": str(cfg.paths.output_dir),
        "student_weights": None if student_path is None else str(student_path),
        "best_checkpoint": best_checkpoint,
        "last_checkpoint": last_checkpoint,
    }
    for key in ("best_top1", "last_top1"):
        if summary[key] is not None and not math.isfinite(summary[key]):
            raise RuntimeError(f"{key} is not finite ({summary[key]}): the run diverged")
    return summary


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns (and writes) its summary.

    Every value is checked before any work, a resume is checked against its checkpoint, and the run holds
    its folder's lock until it ends. A run stopped by SIGTERM (Slurm, ``timeout``) or Ctrl-C writes its
    summary marked ``interrupted``, with the checkpoint to resume from, and raises :class:`RunInterrupted`.
    """
    validate(cfg)
    check_config(cfg)
    resume = plan_resume(cfg)
    output_dir = Path(cfg.paths.output_dir)
    writer = rank_zero_only.rank == 0  # one writer under DDP
    with RunFolder(output_dir) if writer else nullcontext():
        teacher_summary = ensure_teacher(cfg)
        # seeded after the (optional) teacher training, so a run does not depend on whether it was cached
        L.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        module = build_module(cfg, datamodule)
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        if writer:
            if resume is not None:
                carry_history(resume, output_dir)
                set_aside_summary(output_dir)
            atomic_write_text(output_dir / "config.yaml", config_yaml)
        record = RunConfigRecord(OmegaConf.to_container(cfg, resolve=True), config_yaml)
        loggers = build_loggers(cfg, resume)
        callbacks = build_callbacks(cfg, record)
        trainer: L.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            sync_batchnorm=False,
            enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
            **_step_logging(cfg),
        )
        student_path = Path(cfg.get("export_path") or output_dir / "student.pth")
        summary = None
        try:
            with known_warnings_silenced():
                trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
                summary = summarize(cfg, trainer, module, student_path)  # before the test resets the metrics
                summary |= final_test(trainer, module, datamodule)
        except SystemExit:  # Lightning's answer to SIGTERM and Ctrl-C, in training or in the final test
            if trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            _stop_interrupted(cfg, trainer, module, loggers, record, resume, summary)
        summary |= _provenance(record, resume, teacher_summary)
        if writer:
            export_state_dict(module.student, student_path)
            atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2))
        close_loggers(loggers, summary)
    return summary


def set_aside_summary(output_dir: Path) -> None:
    """A run resumed in its folder is running again: its earlier summary becomes ``summary.previous.json``,
    so that neither the report nor a later reader takes the old result for the new config's."""
    summary = output_dir / "summary.json"
    if summary.is_file():
        summary.replace(output_dir / "summary.previous.json")


def final_test(trainer: L.Trainer, module: DistillationModule, datamodule: Any) -> dict[str, Any]:
    """With validation held out of training (``data.val_source=holdout``), test the final student once on
    the evaluation split: tuning picked settings by the holdout, and this split stays unseen until now."""
    source = getattr(datamodule, "val_source", "test")
    if source != "holdout":
        return {"val_source": source}
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "val_source": source,
        "test_top1": _metric(trainer, "test/top1"),
        "test_top5": _metric(trainer, "test/top5"),
    }


def _step_logging(cfg: DictConfig) -> dict[str, Any]:
    """``logger.log_every_n_steps`` also sets how often Lightning hands per-step values to the loggers."""
    every = (cfg.get("logger") or {}).get("log_every_n_steps")
    return {} if every is None else {"log_every_n_steps": every}


def _provenance(record: RunConfigRecord, resume: ResumePlan | None, teacher: dict | None) -> dict[str, Any]:
    """Where the numbers come from: the config's hash, the resume and any teacher trained first."""
    out: dict[str, Any] = {"config_sha256": record.sha256}
    if resume is not None:
        out["resumed_from"] = {
            "checkpoint": str(resume.checkpoint),
            "completed_epochs": resume.epoch + 1,
            "changed": resume.changed,
            "config_checked": resume.config_checked,
        }
    if teacher is not None:
        out["teacher_training"] = teacher
    return out


def _stop_interrupted(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DistillationModule,
    loggers: list[Any],
    record: RunConfigRecord,
    resume: ResumePlan | None,
    trained: dict[str, Any] | None,
) -> None:
    """Write the summary of a run stopped by a signal (no student.pth: it is not a finished student);
    ``trained`` is the summary of a run stopped in its final test, after training."""
    sigterm = trainer.received_sigterm
    summary = summarize(cfg, trainer, module, None, status="interrupted") if trained is None else trained
    summary |= {"status": "interrupted", "student_weights": None}
    summary |= _provenance(record, resume, None)
    _, last = checkpoint_paths(trainer)
    resume_from = last if last and Path(last).is_file() else None
    summary["interrupted_by"] = "SIGTERM" if sigterm else "SIGINT"
    summary["resume_checkpoint"] = resume_from
    if rank_zero_only.rank == 0:
        atomic_write_text(Path(cfg.paths.output_dir) / "summary.json", json.dumps(summary, indent=2))
    close_loggers(loggers, summary)
    how = (
        f"resume with ckpt_path={resume_from}" if resume_from else "no epoch had finished: nothing to resume"
    )
    log.error(
        "run interrupted by %s after %d completed epoch(s); summary.json is marked interrupted; %s",
        summary["interrupted_by"],
        summary["epochs"],
        how,
    )
    raise RunInterrupted(143 if sigterm else 130)

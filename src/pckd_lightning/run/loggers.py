"""A run's loggers: the configured ones, the CSV record and the epoch lines; a resumed run continues its CSV
history and its W&B run (whose id is recovered from the checkpoint's run folder)."""

from __future__ import annotations

import re
from typing import Any

from hydra.utils import get_class
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.loggers import EpochLineLogger, RunCSVLogger
from pckd_lightning.resume import ResumePlan
from pckd_lightning.run.build import instantiate

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
        if summary.get(k) is not None
    }
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update({**results, "status": summary["status"]})
            logger.experiment.finish()
        elif not isinstance(logger, EpochLineLogger):
            logger.log_metrics({f"summary/{k}": v for k, v in results.items()})
            logger.save()

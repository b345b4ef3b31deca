"""A run stopped by a signal (SIGTERM from Slurm or ``timeout``, Ctrl-C): its summary says so and names the
checkpoint to resume from, and the process exits 128 + the signal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.resume import ResumePlan
from pckd_lightning.run.loggers import close_loggers
from pckd_lightning.run.summary import checkpoint_paths, provenance, summarize, write_summary

log = logging.getLogger(__name__)


class RunInterrupted(SystemExit):
    """The run was stopped by a signal; its summary says so. Exits 128 + the signal (143 SIGTERM, 130 SIGINT)."""


def stop_interrupted(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DistillationModule,
    loggers: list[Any],
    record: RunConfigRecord,
    resume: ResumePlan | None,
    trained: dict[str, Any] | None,
    code: dict[str, Any],
) -> None:
    """Write the summary of a run stopped by a signal (no student.pth: it is not a finished student) and raise
    :class:`RunInterrupted`; ``trained`` is the summary of a run stopped in its final test, after training,
    ``code`` the code version read as the run started."""
    sigterm = trainer.received_sigterm
    summary = summarize(cfg, trainer, module, None, status="interrupted") if trained is None else trained
    summary |= {"status": "interrupted", "student_weights": None}
    summary |= provenance(record, resume, None, code)
    _, last = checkpoint_paths(trainer)
    resume_from = last if last and Path(last).is_file() else None
    summary["interrupted_by"] = "SIGTERM" if sigterm else "SIGINT"
    summary["resume_checkpoint"] = resume_from
    if rank_zero_only.rank == 0:
        write_summary(Path(cfg.paths.output_dir), summary)
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

"""A run stopped by a signal (SIGTERM from Slurm or ``timeout``, Ctrl-C): its summary says so and names the
checkpoint to resume from, and the process exits 128 + the signal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.export import export_state_dict
from pckd_lightning.resume import ResumePlan
from pckd_lightning.run.loggers import close_loggers
from pckd_lightning.run.summary import checkpoint_paths, provenance, summarize, write_summary

log = logging.getLogger(__name__)


class RunInterrupted(SystemExit):
    """The run was stopped by a signal; its summary says so. Exits 128 + the signal (143 SIGTERM, 130 SIGINT)."""


def stop_before_restart(trainer: L.Trainer, resume: ResumePlan, loggers: list[Any]) -> NoReturn:
    """A resume stopped by a signal before training restarted (while the teacher was measured, say): the
    folder still holds the earlier run's summary and config, left as they are; the same resume starts again."""
    sigterm = trainer.received_sigterm
    close_loggers(loggers, {"status": "interrupted"})
    log.error(
        "resume interrupted by %s before training restarted: the run folder is unchanged; resume again with "
        "ckpt_path=%s",
        "SIGTERM" if sigterm else "SIGINT",
        resume.checkpoint,
    )
    raise RunInterrupted(143 if sigterm else 130)


def stop_interrupted(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DistillationModule,
    loggers: list[Any],
    record: RunConfigRecord,
    resume: ResumePlan | None,
    trained: dict[str, Any] | None,
    code: dict[str, Any],
    student_path: Path,
) -> None:
    """Write the summary of a run stopped by a signal and raise :class:`RunInterrupted`; ``trained`` is the
    summary of a run stopped in its final test, ``code`` the code version read as the run started.

    A run stopped before its last epoch ended writes no student.pth (it is not a finished student) and names
    the checkpoint to resume from; one stopped after (in the final test, or as the last epoch closed) has
    nothing left to train, so it writes the trained student for pckd-eval instead."""
    sigterm = trainer.received_sigterm
    max_epochs = cfg.trainer.get("max_epochs")
    finished = trained is not None or (
        isinstance(max_epochs, int) and trainer.current_epoch >= max_epochs > 0
    )
    summary = summarize(cfg, trainer, module, None, status="interrupted") if trained is None else trained
    summary |= {"status": "interrupted", "student_weights": str(student_path) if finished else None}
    summary |= provenance(record, resume, None, code)
    _, last = checkpoint_paths(trainer)
    resume_from = last if last and Path(last).is_file() and not finished else None
    summary["interrupted_by"] = "SIGTERM" if sigterm else "SIGINT"
    summary["resume_checkpoint"] = resume_from
    if rank_zero_only.rank == 0:
        if finished:
            export_state_dict(module.student, student_path)
        write_summary(Path(cfg.paths.output_dir), summary)
    close_loggers(loggers, summary)
    how = (
        f"training had finished: {student_path} is the trained student (pckd-eval scores it)"
        if finished
        else f"resume with ckpt_path={resume_from}"
        if resume_from
        else "no epoch had finished: nothing to resume"
    )
    log.error(
        "run interrupted by %s after %d completed epoch(s); summary.json is marked interrupted; %s",
        summary["interrupted_by"],
        summary["epochs"],
        how,
    )
    raise RunInterrupted(143 if sigterm else 130)

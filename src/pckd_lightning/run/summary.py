"""What a run leaves in ``summary.json``: its results, the checkpoints to go on from, and where its numbers
come from (the code's commit, the machine, the config's hash, a resume, a teacher trained first)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.atomic import atomic_write_text
from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.models import model_name
from pckd_lightning.resume import ResumePlan
from pckd_lightning.run.origin import machine


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


def aug_stream(data: DictConfig) -> str:
    """How the training views were drawn: ``seed`` (``data.aug_seed`` follows the run's seed, the default),
    ``shared`` (a value of its own, which a sweep shares: a teacher cache needs it) or ``loader`` (null: the
    loader workers' generators). Read before resolving: a shared value may equal the seed."""
    if data.get("aug_seed") is None:
        return "loader"
    return "seed" if OmegaConf.is_interpolation(data, "aug_seed") else "shared"


def summarize(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: DistillationModule,
    student_path: Path | None,
    status: str = "complete",
) -> dict:
    best_checkpoint, last_checkpoint = checkpoint_paths(trainer)
    teacher_file = None if module.teacher is None else module.teacher.weights_file
    summary = {
        "status": status,
        "method": cfg.distill.get("name"),
        "student": model_name(cfg.model.student),
        "teacher": None if cfg.model.get("teacher") is None else cfg.model.teacher.name,
        "seed": cfg.get("seed"),
        "aug_stream": aug_stream(cfg.data),
        "epochs": trainer.current_epoch,
        "teacher_top1": module.teacher_top1,
        "teacher_checkpoint": None if teacher_file is None else teacher_file.path,
        "teacher_sha256": None if teacher_file is None else teacher_file.sha256,
        # the folder its outputs were read from (and written to) instead of running it; None: it ran live
        "teacher_cache": None if module.step.teacher_cache is None else str(module.step.teacher_cache.folder),
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
        "machine": machine(trainer),
        # when training ended (UTC): which of two runs of one seed is the rerun, whatever the files' times say
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }
    for key in ("best_top1", "last_top1"):
        if summary[key] is not None and not math.isfinite(summary[key]):
            raise RuntimeError(f"{key} is not finite ({summary[key]}): the run diverged")
    return summary


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


def provenance(
    record: RunConfigRecord, resume: ResumePlan | None, teacher: dict | None, code: dict[str, Any]
) -> dict[str, Any]:
    """Where the numbers come from: the code (:func:`code_version` as the run started), the config's hash, the
    resume and, for a resumed run, every training segment (each resume's changes and code), and any teacher
    trained first."""
    out: dict[str, Any] = {"code": code, "config_sha256": record.sha256}
    if resume is not None:
        out["resumed_from"] = resume.entry()
        out["segments"] = record.segments
    if teacher is not None:
        out["teacher_training"] = teacher
    return out


class FolderHandover:
    """Hands the run folder to this run: its ``config.yaml`` written and, for a resume, the earlier summary set
    aside as ``summary.previous.json`` (so that neither the report nor a reader takes the old result for the
    new config's). A resume calls it as training starts, and before any summary is written: a refusal or a
    crash on the way (another world size, a teacher below its minimum accuracy, out of memory) leaves the
    finished run's summary and config in place. Rank 0 only; once."""

    def __init__(self, output_dir: Path, config_yaml: str, resumed: bool, writer: bool) -> None:
        self.output_dir, self.config_yaml, self.resumed = output_dir, config_yaml, resumed
        self.done = not writer

    def __call__(self, *_: Any) -> None:  # also Lightning's on_train_start(trainer, module)
        if self.done:
            return
        summary = self.output_dir / "summary.json"
        if self.resumed and summary.is_file():
            summary.replace(self.output_dir / "summary.previous.json")
        atomic_write_text(self.output_dir / "config.yaml", self.config_yaml)
        self.done = True


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2))

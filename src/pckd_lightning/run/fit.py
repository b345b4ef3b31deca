"""One training job, from a composed config to its summary: checked before any work, run in its locked folder
(after the teacher it may have to train first), interrupted cleanly by a signal."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LambdaCallback
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.callbacks.config_record import RunConfigRecord
from pckd_lightning.export import export_state_dict
from pckd_lightning.resume import carry_history, check_world_size, plan_resume
from pckd_lightning.run.build import build_callbacks, build_module, build_trainer, instantiate
from pckd_lightning.run.check import check_config, check_world
from pckd_lightning.run.interrupts import stop_before_restart, stop_interrupted
from pckd_lightning.run.loggers import build_loggers, close_loggers
from pckd_lightning.run.origin import code_version
from pckd_lightning.run.summary import (
    FolderHandover,
    final_test,
    provenance,
    summarize,
    write_summary,
)
from pckd_lightning.run.teacher import record_recipe, teacher_to_train
from pckd_lightning.run_folder import RunFolder
from pckd_lightning.schema.config import validate

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


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns (and writes) its summary.

    Every value is checked before any work, a resume is checked against its checkpoint, and the run holds
    its folder's lock until it ends. A missing demo teacher is trained first, by a run of its own. A run
    stopped by SIGTERM (Slurm, ``timeout``) or Ctrl-C writes its summary marked ``interrupted``, with the
    checkpoint to resume from, and raises :class:`~pckd_lightning.run.interrupts.RunInterrupted`.
    """
    validate(cfg)
    check_config(cfg)
    resume = plan_resume(cfg)
    output_dir = Path(cfg.paths.output_dir)
    writer = rank_zero_only.rank == 0  # one writer under DDP
    with RunFolder(output_dir) if writer else nullcontext():
        teacher_cfg = teacher_to_train(cfg)
        teacher_summary = None
        if teacher_cfg is not None:
            record_recipe(teacher_cfg)
            teacher_summary = fit(teacher_cfg)
        # seeded after the (optional) teacher training, so a run does not depend on whether it was cached
        L.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        module = build_module(cfg, datamodule)
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        handover = FolderHandover(output_dir, config_yaml, resumed=resume is not None, writer=writer)
        code = code_version()  # as the run starts: the checkout may change while it trains
        segments = [{"code": code}] if resume is None else [*resume.earlier, {"code": code, **resume.entry()}]
        record = RunConfigRecord(OmegaConf.to_container(cfg, resolve=True), config_yaml, segments)
        callbacks = [*build_callbacks(cfg, record), LambdaCallback(on_train_start=handover)]
        # the loggers come after the resume's last check: they write (the CSV history, a W&B run's config)
        trainer = build_trainer(cfg, callbacks, [])
        check_world(datamodule, trainer.world_size)
        if resume is None:
            handover()
        else:
            check_world_size(resume, trainer.world_size, cfg)  # known once the trainer is built
            if writer:
                carry_history(resume, output_dir)
        loggers = build_loggers(cfg, resume)
        trainer.loggers = loggers
        student_path = Path(cfg.get("export_path") or output_dir / "student.pth")
        summary = None
        try:
            with known_warnings_silenced():
                trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
                summary = summarize(cfg, trainer, module, student_path)  # before the test resets the metrics
                summary |= final_test(trainer, module, datamodule)
        except (SystemExit, RuntimeError) as error:
            # SystemExit: Lightning's answer to SIGTERM and Ctrl-C, in training or in the final test.
            # RuntimeError after a SIGTERM: one to the whole process group (scancel, kill -- -PGID) also ends
            # the loader's workers, and torch's "DataLoader worker ... killed" comes first: the same stop
            if isinstance(error, SystemExit):
                stopped = trainer.state.status == TrainerStatus.INTERRUPTED
            else:
                stopped = trainer.received_sigterm
            if not stopped:
                raise
            if resume is not None and not handover.done:  # stopped before training restarted
                stop_before_restart(trainer, resume, loggers)
            handover()
            stop_interrupted(cfg, trainer, module, loggers, record, resume, summary, code, student_path)
        summary |= provenance(record, resume, teacher_summary, code)
        handover()  # a resume that had nothing left to train never started training
        if writer:
            export_state_dict(module.student, student_path)
            write_summary(output_dir, summary)
        close_loggers(loggers, summary)
    return summary

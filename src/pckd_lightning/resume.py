"""Resuming a run: what the checkpoint fixes is compared with the new config, and the metric history is kept.

A Lightning checkpoint restores the weights, the optimizer and the scheduler state; the rest of a run is
built from the config. A resume whose config differs from the checkpoint's in what shaped the training
(model, loss terms, data, optimizer, schedule, seed) would record one setting and train another, so it is
refused, naming the keys, unless ``resume.allow_changes`` lists them. Optimizer and scheduler values cannot
be allowed: their restored state would override them. The CSV history up to the checkpoint's epoch is
carried into the resumed run's ``csv/metrics.csv`` (the same file when it resumes in its own folder).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from pckd_lightning import preview
from pckd_lightning.atomic import atomic_open
from pckd_lightning.callbacks.config_record import STATE_KEY
from pckd_lightning.distillation.checkpoint_io import WORLD_SIZE_KEY, read_checkpoint
from pckd_lightning.distillation.teacher import file_sha256
from pckd_lightning.errors import ConfigError
from pckd_lightning.upgrades import upgrade_config

log = logging.getLogger(__name__)

#: top-level sections and keys whose value the checkpoint's training depended on
FIXED = (
    "model",
    "distill",
    "data",
    "optimizer",
    "scheduler",
    "lr_milestones",
    "seed",
    "trainer.precision",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.gradient_clip_algorithm",
    "trainer.devices",  # with num_nodes: the global batch
    "trainer.num_nodes",
    "module.lr_scaling",
    "module.sync_batchnorm",
)
#: restored from the checkpoint's own state: a new value would be recorded but not used
RESTORED = ("optimizer", "scheduler", "lr_milestones")
#: where a run reads its inputs from, or how fast: free to differ on a resume (the teacher's path may move;
#: its file is compared by content, see :func:`teacher_change`)
RUNTIME = (
    "data.root",
    "data.num_workers",
    "data.download",
    "model.teacher.checkpoint",
    "model.train_teacher_if_missing.checkpoint",
)
#: settings a resume may change that still shape its numbers (how often it validates, so which epoch is best;
#: the batches an epoch sees or a score counts; the teacher's precision): never refused, recorded in ``changed``.
#: Each with the value that leaves a run as the defaults train it (pckd-report keeps runs off it in rows of
#: their own; a config older than the key compares equal); a fraction's 1.0 is every batch, an int counts them
RECORDED = {
    "trainer.check_val_every_n_epoch": 1,
    "trainer.val_check_interval": 1.0,
    "trainer.limit_train_batches": 1.0,
    "trainer.limit_val_batches": 1.0,
    "trainer.limit_test_batches": 1.0,
    "trainer.overfit_batches": 0,
    "module.teacher_options.float32": False,
}


def recorded_value(key: str, value: Any) -> tuple[str, Any]:
    """A :data:`RECORDED` setting as it acts: unset is its default; a Lightning fraction (a default of 1.0)
    keeps its type, 1.0 being every batch and the int 1 a single one; other numbers compare by value."""
    default = RECORDED[key]
    value = default if value is None else value
    if isinstance(default, float):
        return ("fraction" if isinstance(value, float) else "count", value)
    if isinstance(value, float) and value.is_integer():
        return ("value", int(value))
    return ("value", value)


def recorded_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"checkpoint": old, "run": new}}`` for each :data:`RECORDED` setting that acts otherwise
    (:func:`recorded_value`: a key an older config lacks is at its default, 1.0 is not 1)."""
    old, new = (
        _settings(upgrade_config(saved), tuple(RECORDED)),
        _settings(upgrade_config(current), tuple(RECORDED)),
    )
    return {
        key: {"checkpoint": old.get(key), "run": new.get(key)}
        for key in RECORDED
        if recorded_value(key, old.get(key)) != recorded_value(key, new.get(key))
    }


#: the allow_changes entry that accepts another teacher file
TEACHER_KEY = "model.teacher.checkpoint"
METRICS = Path("csv") / "metrics.csv"


@dataclass
class ResumePlan:
    """What a resume starts from: the checkpoint, its last completed epoch and the accepted changes."""

    checkpoint: Path
    #: the run folder the checkpoint belongs to (its CSV history and W&B run)
    run_dir: Path
    #: the checkpoint's epoch (0-indexed: the last completed one, or the one it was saved inside) and step
    epoch: int
    step: int = 0
    #: whether it was saved after its epoch's last training batch (at the epoch's end, not by a signal or a
    #: mid-epoch validation inside it)
    epoch_done: bool = True
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_checked: bool = True
    #: Lightning's own Slurm requeue checkpoint (``hpc_ckpt_*.ckpt``), which it resumes from by itself
    requeued: bool = False
    #: the checkpoint's own training segments (its record's ``segments``; an older checkpoint's first segment
    #: is known only to exist: its code was not recorded)
    earlier: list[dict[str, Any]] = field(default_factory=lambda: [{"code": None}])
    #: how many processes trained the checkpoint (None: an older checkpoint)
    world_size: int | None = None

    @property
    def completed_epochs(self) -> int:
        """The epochs whose every training batch the checkpoint holds."""
        return self.epoch + 1 if self.epoch_done else self.epoch

    def entry(self) -> dict[str, Any]:
        """This resume as summary.json's ``resumed_from`` and the record's segment list state it; ``changed``
        is the plan's own dict, so a change found later (the world size, once the trainer is built) is in it."""
        return {
            "checkpoint": str(self.checkpoint),
            "completed_epochs": self.completed_epochs,
            "changed": self.changed,
            "config_checked": self.config_checked,
        }


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (under ``prefix``); lists stay values."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= flatten_config(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def experiment_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened keys of a resolved run config that make the run the experiment it is (:data:`FIXED`,
    less :data:`RUNTIME`): a resume must keep them, and the report averages seeds only over runs that agree."""
    config = upgrade_config(config)  # a checkpoint of an earlier version compares as this version writes it
    return _settings(config, (*FIXED, *preview.fixed_keys(config)))


def _settings(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The flattened ``config`` under ``keys`` (sections or keys), less :data:`RUNTIME`."""
    return {
        k: v
        for k, v in flatten_config(config).items()
        if any(k == f or k.startswith(f"{f}.") for f in keys) and not k.startswith(RUNTIME)
    }


def changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"checkpoint": old, "run": new}}`` for every fixed key that differs."""
    old, new = experiment_config(saved), experiment_config(current)
    return {
        key: {"checkpoint": old.get(key), "run": new.get(key)}
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def requeue_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``hpc_ckpt_*.ckpt`` Lightning's Slurm requeue left in the run folder, which it resumes from."""
    found = sorted(output_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    return found[-1] if found else None


def plan_resume(cfg: DictConfig) -> ResumePlan | None:
    """Read ``cfg.ckpt_path`` (or a Slurm requeue's checkpoint in the run folder; None when the run is new)
    and refuse changes the checkpoint does not allow."""
    # as Lightning decides it: a requeue checkpoint is resumed from on Slurm, when ckpt_path is not set
    on_slurm = SLURMEnvironment.detect()
    requeued = (
        None if cfg.get("ckpt_path") or not on_slurm else requeue_checkpoint(Path(cfg.paths.output_dir))
    )
    if not cfg.get("ckpt_path") and requeued is None:
        return None
    path = requeued or Path(cfg.ckpt_path).expanduser()
    checkpoint = read_checkpoint(path, what="ckpt_path")
    if "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={str(path)!r} is not a Lightning training checkpoint (no state_dict/epoch); resume from "
            "<run>/checkpoints/last.ckpt (a student.pth is for model.teacher.checkpoint or pckd-eval)"
        )
    plan = ResumePlan(
        checkpoint=path,
        run_dir=path.resolve().parent if requeued else path.resolve().parent.parent,
        epoch=int(checkpoint["epoch"]),
        step=int(checkpoint.get("global_step", 0)),
        requeued=requeued is not None,
        world_size=checkpoint.get(WORLD_SIZE_KEY),
    )
    # Lightning's fit loop state; a checkpoint without it (older versions) was saved at an epoch's end
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    processed = ((fit_loop.get("epoch_progress") or {}).get("current") or {}).get("processed")  # its `done`
    plan.epoch_done = bool((fit_loop.get("epoch_loop.batch_progress") or {}).get("is_last_batch", True))
    max_epochs = cfg.trainer.get("max_epochs")
    if isinstance(processed, int) and isinstance(max_epochs, int) and processed >= max_epochs > 0:
        raise ConfigError(
            f"ckpt_path={str(path)!r} has trained all {processed} epochs (trainer.max_epochs={max_epochs}): "
            "resuming would train nothing and replace the finished run's summary with an empty one. To train "
            f"longer, set trainer.max_epochs above {processed}; to score it, run pckd-eval on its student.pth"
        )
    changed_teacher = teacher_change(cfg, checkpoint)
    allowed = _allowed_changes(cfg)
    if changed_teacher is not None:
        teacher, missing = changed_teacher
        if not _allows(allowed, TEACHER_KEY):
            raise ConfigError(
                f"the checkpoint was distilled from the teacher file {teacher['checkpoint']}, but this run's "
                f"{TEACHER_KEY} is {teacher['run']}: "
                + (
                    "its teacher would be loaded from a missing file, or trained anew. Point "
                    f"{TEACHER_KEY} at the checkpoint's teacher file"
                    if missing
                    else "another teacher. Resume with the checkpoint's teacher file"
                )
                + f", or accept the change with resume.allow_changes=[{TEACHER_KEY}] (the new teacher is then "
                "measured again and summary.json records the change)"
            )
        plan.changed[TEACHER_KEY] = teacher
    record = (checkpoint.get("callbacks") or {}).get(STATE_KEY)
    if record is None:
        log.warning("%s holds no run config (an older checkpoint): changed settings cannot be detected", path)
        plan.config_checked = False
        return plan
    plan.earlier = list(record.get("segments") or plan.earlier)
    current = OmegaConf.to_container(cfg, resolve=True)
    changes = changed_keys(record["config"], current)
    refused = {k: v for k, v in changes.items() if not _allows(allowed, k)}
    restored = [k for k in changes if k.startswith(RESTORED) and k not in refused]
    if restored:
        raise ConfigError(
            f"resume.allow_changes cannot allow {restored}: the checkpoint's optimizer and scheduler state "
            "would override them, so the run would record one value and train with another. Start a new run "
            "instead (e.g. from the student's weights), or drop these overrides"
        )
    if refused:
        listed = ", ".join(f"{k}: {v['checkpoint']!r} -> {v['run']!r}" for k, v in refused.items())
        allowable = [k for k in refused if not k.startswith(RESTORED)]
        fixed = [k for k in refused if k.startswith(RESTORED)]
        how = [f"accept the changes with resume.allow_changes=[{','.join(allowable)}]"] if allowable else []
        if fixed:
            how.append(
                f"start a new run to change {fixed} (the checkpoint's optimizer and scheduler state fix them)"
            )
        raise ConfigError(
            f"the resumed run's config differs from the checkpoint's in what it fixed ({listed}). Resume with the "
            f"checkpoint's settings (its run folder has config.yaml), or {', or '.join(how)}"
        )
    plan.changed |= changes | recorded_changes(record["config"], current)
    return plan


def check_world_size(plan: ResumePlan, world_size: int, cfg: DictConfig) -> None:
    """Refuse a resume on another number of processes than the checkpoint's (``trainer.devices=-1`` on a
    machine with other GPUs changes the global batch, and the linear lr scaling, with the same config),
    unless ``resume.allow_changes`` lists ``trainer.devices``; an allowed change is recorded."""
    if plan.world_size is None or plan.world_size == world_size:
        return
    was = (
        f"ckpt_path={str(plan.checkpoint)!r} was trained by {plan.world_size} process(es), this run has "
        f"{world_size}"
    )
    if (cfg.get("module") or {}).get("lr_scaling") == "linear":
        raise ConfigError(
            f"{was}, and module.lr_scaling=linear scales the lr by that count, but the checkpoint's optimizer "
            "state would restore the old lr: the run would record one lr and train another. Resume with "
            f"trainer.devices × trainer.num_nodes = {plan.world_size}"
        )
    allowed = _allowed_changes(cfg)
    if not _allows(allowed, "trainer.devices"):
        raise ConfigError(
            f"{was}: the global batch would change. Resume with trainer.devices × trainer.num_nodes = "
            f"{plan.world_size}, or accept the change with resume.allow_changes=[trainer.devices]"
        )
    plan.changed[WORLD_SIZE_KEY] = {"checkpoint": plan.world_size, "run": world_size}


def _allowed_changes(cfg: DictConfig) -> set[str]:
    """The keys (and sections) ``resume.allow_changes`` lists."""
    return set((cfg.get("resume") or {}).get("allow_changes") or [])


def _allows(allowed: set[str], key: str) -> bool:
    """Whether ``resume.allow_changes`` lists ``key`` or a section above it."""
    return any(key == a or key.startswith(f"{a}.") for a in allowed)


def teacher_change(cfg: DictConfig, checkpoint: dict[str, Any]) -> tuple[dict[str, str], bool] | None:
    """``({"checkpoint": ..., "run": ...}, missing)`` (path and SHA-256 of each; whether the run's file is
    missing) when the run's teacher file is not the one the checkpoint was distilled from; None when it is,
    or when either side names no teacher file."""
    saved = checkpoint.get("teacher") or {}
    teacher = (cfg.get("model") or {}).get("teacher")
    if not saved.get("sha256") or not teacher or not teacher.get("checkpoint"):
        return None
    path = Path(teacher.checkpoint).expanduser()
    # a missing file is another teacher too: the demo's recipe would train a new one there (a resume from
    # another folder, a `${pckd.shortened:}` cache name, a cleared cache), and the loader would name it anyway
    sha256 = file_sha256(path) if path.is_file() else None
    if sha256 == saved["sha256"]:
        return None
    change = {
        "checkpoint": f"{saved.get('path')} (sha256 {saved['sha256'][:12]})",
        "run": f"{path} (sha256 {sha256[:12]})" if sha256 else f"{path} (no such file)",
    }
    return change, sha256 is None


def carry_history(plan: ResumePlan, output_dir: Path) -> int:
    """Write the rows of the checkpoint's run up to its epoch into ``output_dir``'s CSV; returns their count.

    Rows of epochs after the checkpoint (they are trained again) and the old run's final ``summary/*`` rows
    are dropped. The source is the checkpoint's run folder (``<run>/checkpoints/last.ckpt``).
    """
    source = plan.run_dir / METRICS
    if not source.is_file():
        return 0
    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if _before_resume(row, plan)]
    with atomic_open(output_dir / METRICS, "w") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return len(kept)


def _before_resume(row: dict[str, str], plan: ResumePlan) -> bool:
    """A row of the checkpoint's epochs: per-epoch rows by their epoch, others (lr, the teacher) by step."""
    if any(key.startswith("summary/") and value for key, value in row.items()):
        return False
    try:
        epoch = int(float(row["epoch"])) if row.get("epoch") else None
        step = int(float(row.get("step") or 0))
    except ValueError:
        return False
    if epoch is not None and epoch < plan.completed_epochs:
        return True
    # the epoch a checkpoint was saved inside keeps its rows logged before the save only
    return (epoch is None or epoch == plan.epoch) and (step == 0 or step < plan.step)

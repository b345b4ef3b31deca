"""The demo's missing teacher: when ``model.train_teacher_if_missing`` is set and the teacher's cache file does
not exist yet, :func:`pckd_lightning.run.fit` first trains one with :func:`teacher_training_config`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pckd_lightning.atomic import atomic_write_text
from pckd_lightning.errors import CheckpointError

log = logging.getLogger(__name__)

#: settings of the teacher's training run that do not change its weights: where files go and how fast they
#: are read, the hardware, logging and progress display
NOT_RECIPE = {
    "data": {"root", "download", "num_workers", "pin_memory", "val_batch_size", "persistent_workers"},
    "trainer": {
        "_target_",
        "default_root_dir",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "plugins",
        "logger",
        "callbacks",
        "enable_progress_bar",
        "enable_model_summary",
        "enable_checkpointing",
        "log_every_n_steps",
        "num_sanity_val_steps",
        "deterministic",
        "benchmark",
        "use_distributed_sampler",
    },
}


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
            "view_recipe": "rotation",  # with one view: the plain augmented image, whatever the student's
            "terms": {"ce": {"_target_": "pckd_lightning.losses.CrossEntropyTerm"}},
        }
        teacher_cfg.trainer.max_epochs = recipe.max_epochs
        teacher_cfg.seed = recipe.seed  # the teacher's own seed: every student seed shares one teacher
        # one process: DDP workers re-run the script and must find the teacher already written
        teacher_cfg.trainer.update({"devices": 1, "num_nodes": 1, "strategy": "auto"})
        teacher_cfg.module.sync_batchnorm = False
        teacher_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "teacher")
        teacher_cfg.export_path = cfg.model.teacher.checkpoint
        teacher_cfg.ckpt_path = None  # a resume refers to the distillation run, not to the teacher's
    return teacher_cfg


def training_recipe(teacher_cfg: DictConfig) -> dict[str, Any]:
    """What made the cached teacher's weights, as ``{dotted key: value}``: its architecture, seed, data,
    optimizer, schedule and trainer settings (not :data:`NOT_RECIPE`)."""
    resolved = OmegaConf.to_container(teacher_cfg, resolve=True)
    parts = {
        "model.teacher": resolved["model"]["student"].get("name"),
        "seed": resolved.get("seed"),
        "data": resolved.get("data"),
        "optimizer": resolved.get("optimizer"),
        "scheduler": resolved.get("scheduler"),
        "lr_milestones": resolved.get("lr_milestones"),
        "module.lr_scaling": (resolved.get("module") or {}).get("lr_scaling"),
        "trainer": resolved.get("trainer"),
    }
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any, skip: set[str]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in skip:
                    add(f"{prefix}.{key}", item, set())
        else:
            flat[prefix] = value

    for key, value in parts.items():
        add(key, value, NOT_RECIPE.get(key, set()))
    return flat


def recipe_file(checkpoint: str | Path) -> Path:
    """The recipe recorded beside a cached teacher: ``<name>.recipe.json``."""
    return Path(checkpoint).expanduser().with_suffix(".recipe.json")


def record_recipe(teacher_cfg: DictConfig) -> None:
    """Write the recipe of the teacher just trained beside its cache file (after the file itself)."""
    atomic_write_text(
        recipe_file(teacher_cfg.export_path), json.dumps(training_recipe(teacher_cfg), indent=1, default=str)
    )


def check_recipe(cfg: DictConfig) -> None:
    """Warn when the cached teacher was trained with other settings than this run would train it with (another
    image size, classes, schedule, ...): it is used as is, and the run measures and records its accuracy."""
    path = recipe_file(cfg.model.train_teacher_if_missing.checkpoint)
    if not path.is_file():
        return  # cached before recipes were recorded
    recorded = json.loads(path.read_text())
    wanted = json.loads(json.dumps(training_recipe(teacher_training_config(cfg)), default=str))
    differ = sorted(k for k in recorded.keys() | wanted.keys() if recorded.get(k) != wanted.get(k))
    if differ:
        changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in differ)
        log.warning(
            "the cached teacher %s was trained with other settings than this run would use (%s); it is used as "
            "is. Delete it (and %s) to train one with this run's settings",
            cfg.model.teacher.checkpoint,
            changes,
            path.name,
        )


def teacher_to_train(cfg: DictConfig) -> DictConfig | None:
    """The config that trains and caches the teacher, when the config asks for it and its checkpoint does not
    exist yet; None when there is nothing to train.

    Only at the exact cache file ``model.train_teacher_if_missing.checkpoint`` names: any other missing
    file is most likely a typo, and training a teacher at the typo's path would hide it.
    """
    teacher = cfg.model.get("teacher")
    recipe = cfg.model.get("train_teacher_if_missing")
    if teacher is None or recipe is None:
        return None
    path = Path(teacher.checkpoint).expanduser()
    cached = Path(recipe.checkpoint).expanduser()
    if path.is_file():
        log.info("teacher checkpoint found at %s: skipping teacher training", teacher.checkpoint)
        if path.resolve() == cached.resolve():
            check_recipe(cfg)
        return None
    if path.resolve() != cached.resolve():
        raise CheckpointError(
            f"model.teacher.checkpoint={str(path)!r} does not exist. A teacher is trained automatically only "
            f"at its cache file ({cached}, the default); check the path, or train one first: pckd-train "
            f"model=digits_scratch_resnet8 model.student.name={teacher.name} distill=ce export_path={path}"
        )
    log.info("no teacher at %s: training %s from scratch first", teacher.checkpoint, teacher.name)
    return teacher_training_config(cfg)

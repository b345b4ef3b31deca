"""The demo's missing teacher: when ``model.train_teacher_if_missing`` is set and the teacher's cache file does
not exist yet, :func:`pckd_lightning.run.fit` first trains one with :func:`teacher_training_config`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from pckd_lightning.atomic import atomic_write_text
from pckd_lightning.data.base import unused_settings
from pckd_lightning.errors import CheckpointError

log = logging.getLogger(__name__)

#: data settings that do not change the teacher's weights (where and how fast the images are read)
DATA_NOT_RECIPE = {"root", "download", "num_workers", "pin_memory", "val_batch_size", "persistent_workers"}
#: the trainer settings that change the weights a run exports, with the value Lightning takes when unset
TRAINER_RECIPE = {
    "max_epochs": None,
    "max_steps": -1,
    "max_time": None,
    "precision": "32-true",
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "gradient_clip_algorithm": "norm",
    "limit_train_batches": 1.0,
    "fast_dev_run": False,
    "overfit_batches": 0.0,
}
#: Lightning's short spellings of a precision, as the unified names it uses
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
#: written into each recipe; a recipe of another format is not compared key by key
RECIPE_FORMAT = 1


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
        if teacher_cfg.data.get("aug_seed") is not None:  # and its own augmentation stream
            teacher_cfg.data.aug_seed = recipe.seed
        # one process: DDP workers re-run the script and must find the teacher already written
        teacher_cfg.trainer.update({"devices": 1, "num_nodes": 1, "strategy": "auto"})
        teacher_cfg.module.sync_batchnorm = False
        teacher_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "teacher")
        teacher_cfg.export_path = cfg.model.teacher.checkpoint
        teacher_cfg.ckpt_path = None  # a resume refers to the distillation run, not to the teacher's
    return teacher_cfg


def training_recipe(teacher_cfg: DictConfig) -> dict[str, Any]:
    """What made the cached teacher's weights, as ``{dotted key: value}`` as JSON stores it: architecture,
    seed, data (not :data:`DATA_NOT_RECIPE`), optimizer, scheduler and :data:`TRAINER_RECIPE`, an unset trainer
    setting as its default (so that setting the default explicitly is no change)."""
    parts = {
        key: OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        for key in ("data", "optimizer", "scheduler")
        if (node := teacher_cfg.get(key)) is not None
    }
    trainer = {k: teacher_cfg.trainer.get(k) for k in TRAINER_RECIPE}
    trainer = {k: d if trainer[k] is None else trainer[k] for k, d in TRAINER_RECIPE.items()}
    trainer["precision"] = PRECISION_ALIASES.get(str(trainer["precision"]), str(trainer["precision"]))
    if not trainer["gradient_clip_val"]:  # 0 and None: no clipping, whatever the algorithm
        trainer["gradient_clip_val"] = trainer["gradient_clip_algorithm"] = None
    flat: dict[str, Any] = {
        "recipe_format": RECIPE_FORMAT,
        "model.teacher": teacher_cfg.model.student.name,
        "seed": teacher_cfg.seed,
    }
    flat |= {f"trainer.{k}": v for k, v in trainer.items()}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{prefix}.{key}", item)
        else:
            flat[prefix] = value

    for key, value in parts.items():
        add(key, {k: v for k, v in value.items() if key != "data" or k not in DATA_NOT_RECIPE})
    return without_unused(json.loads(json.dumps(flat, default=str)))


def without_unused(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` less the data settings its other settings leave unused (:func:`unused_settings`; applied to a
    recorded recipe too, which an earlier version wrote with them)."""
    data = {k.removeprefix("data."): v for k, v in recipe.items() if k.startswith("data.")}
    unused = {f"data.{k}" for k in unused_settings(data)}
    return {k: v for k, v in recipe.items() if k not in unused}


def recipe_file(checkpoint: str | Path) -> Path:
    """The recipe recorded beside a cached teacher: ``<name>.recipe.json``."""
    return Path(checkpoint).expanduser().with_suffix(".recipe.json")


def record_recipe(teacher_cfg: DictConfig) -> None:
    """Write the recipe of the teacher about to be trained beside its cache file (first: a run that finds the
    teacher finds its recipe; a recipe left without a teacher is overwritten by the next training)."""
    atomic_write_text(
        recipe_file(teacher_cfg.export_path), json.dumps(training_recipe(teacher_cfg), indent=1)
    )


@rank_zero_only
def check_recipe(cfg: DictConfig) -> None:
    """Warn when the cached teacher was trained with other settings than this run would train it with (another
    image size, classes, schedule, ...), or when no recipe says how it was trained: it is used as is, and the
    run measures and records its accuracy. Once per run (rank 0): every DDP rank finds the same teacher."""
    path = recipe_file(cfg.model.train_teacher_if_missing.checkpoint)
    fix = f"Delete it (and {path.name}, if present) to train one with this run's settings"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        recorded = (
            "no recipe was recorded beside it" if not path.exists() else f"its recipe is unreadable ({err})"
        )
    if not isinstance(recorded, dict) or recorded.get("recipe_format") != RECIPE_FORMAT:
        reason = recorded if isinstance(recorded, str) else "its recipe was recorded by another version"
        log.warning(
            "the cached teacher %s is used as is, but %s. %s", cfg.model.teacher.checkpoint, reason, fix
        )
        return
    recorded, wanted = without_unused(recorded), training_recipe(teacher_training_config(cfg))
    differ = sorted(k for k in recorded.keys() | wanted.keys() if recorded.get(k) != wanted.get(k))
    if differ:
        changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {wanted.get(k)!r}" for k in differ)
        log.warning(
            "the cached teacher %s was trained with other settings than this run would use (%s); it is used as "
            "is. %s",
            cfg.model.teacher.checkpoint,
            changes,
            fix,
        )


def teacher_to_train(cfg: DictConfig) -> DictConfig | None:
    """The config that trains and caches the teacher, when the config asks for it and its checkpoint does not
    exist yet; None when there is nothing to train.

    Only at the exact cache file ``model.train_teacher_if_missing.checkpoint`` names: any other missing
    file is most likely a typo, and training a teacher at the typo's path would hide it. A cached teacher
    found there is checked against the recipe recorded beside it (:func:`check_recipe`).
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

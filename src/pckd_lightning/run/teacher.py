"""The demo's missing teacher: when ``model.train_teacher_if_missing`` is set and the teacher's cache file does
not exist yet, :func:`pckd_lightning.run.fit` first trains one with :func:`teacher_training_config`."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from pckd_lightning.errors import CheckpointError

log = logging.getLogger(__name__)


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
    return teacher_training_config(cfg)

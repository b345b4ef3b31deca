"""The run's teacher cache (``module.teacher_options.cache``), built from the config: its key and its layout."""

from __future__ import annotations

import logging

import lightning as L
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.distillation.teacher_cache import CacheLayout, TeacherCache
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import LossTerm
from pckd_lightning.models import Capability, ZooModel

log = logging.getLogger(__name__)


#: data settings that do not change the images a teacher sees (where and how fast they are read, their order)
CACHE_FREE_DATA_KEYS = (
    "root",
    "download",
    "num_workers",
    "pin_memory",
    "batch_size",
    "val_batch_size",
    "seed",
)


def build_teacher_cache(
    cfg: DictConfig, datamodule: L.LightningDataModule, teacher: ZooModel | None, terms: dict[str, LossTerm]
) -> TeacherCache | None:
    """``module.teacher_options.cache``: the teacher's stored outputs, keyed by its file and everything that
    changes its inputs or arithmetic; None without a cache, or when a term reads the teacher's feature maps
    (which are not stored: the teacher then runs live, and the log says why)."""
    folder = cfg.module.teacher_options.get("cache")
    if folder is None or teacher is None:
        return None
    live = [name for name, term in terms.items() if term.weight and Capability.FEATURE_MAPS in term.requires]
    if live:
        log.warning(
            "teacher cache %s not used: %s read the teacher's feature maps, so it runs live", folder, live
        )
        return None
    if cfg.data.get("aug_seed") is None:
        raise ConfigError(
            "module.teacher_options.cache needs one augmentation stream (data.aug_seed): without it the "
            "teacher's inputs differ in every run. Set data.aug_seed=<int> for the whole sweep"
        )
    if teacher.weights_file is None:
        raise ConfigError(
            "module.teacher_options.cache keys the stored outputs by the teacher's file, but this teacher was "
            "not loaded from one; set model.teacher.checkpoint, or module.teacher_options.cache=null"
        )
    data = OmegaConf.to_container(cfg.data, resolve=True)
    key = {
        "teacher_sha256": teacher.weights_file.sha256,
        "data": {k: v for k, v in data.items() if k not in CACHE_FREE_DATA_KEYS},
        "trainer.precision": str(cfg.trainer.get("precision")),
        "teacher_options.float32": bool(cfg.module.teacher_options.get("float32")),
        "channels_last": bool(cfg.module.performance.get("channels_last")),
    }
    layout = CacheLayout(
        epochs=int(cfg.trainer.max_epochs),
        images=len(datamodule.train_labels),
        views=int(datamodule.views),
        outputs={"logits": datamodule.num_classes, "pooled": teacher.feature_dim},
    )
    return TeacherCache(folder, key, layout, float(cfg.module.teacher_options.cache_max_gib))

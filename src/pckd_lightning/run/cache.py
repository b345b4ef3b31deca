"""The run's teacher cache (``module.teacher_options.cache``), built from the config: its key and its layout."""

from __future__ import annotations

import logging

import lightning as L
import torchvision
from omegaconf import DictConfig, OmegaConf

from pckd_lightning.data.base import unused_settings
from pckd_lightning.distillation.teacher_cache import CacheLayout, TeacherCache
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import LossTerm
from pckd_lightning.models import Capability, ZooModel

log = logging.getLogger(__name__)


#: the version of what a cache key cannot see: how a seed draws the views (data/augmentation.py's streams, the
#: view recipes). Raised whenever they change, so that a cache filled by an earlier version is refused
STREAM_FORMAT = 2
#: data settings that do not change the images a teacher sees (where and how fast they are read, their order);
#: the root does where it holds the data set itself (:attr:`ClassificationDataModule.root_is_data`)
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
    if cfg.trainer.get("overfit_batches"):
        log.warning(
            "teacher cache %s not used: trainer.overfit_batches replaces the training sampler, so its batches "
            "are not drawn from the augmentation stream and the teacher runs live",
            folder,
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
    # a data module of the user's own is not known to keep its data elsewhere than at its root
    root_is_data = getattr(type(datamodule), "root_is_data", True)
    free = {k for k in CACHE_FREE_DATA_KEYS if k != "root" or not root_is_data} | unused_settings(data)
    built = OmegaConf.to_container(cfg.model.teacher, resolve=True)
    key = {
        "stream_format": STREAM_FORMAT,
        # its transforms draw the views; a CPU and a CUDA build (0.29.1+cpu, +cu126) draw alike
        "torchvision": torchvision.__version__.split("+")[0],
        "teacher_sha256": teacher.weights_file.sha256,
        # how the file is built into a model (name, its options, input normalization, taps); not where it is
        "teacher": {k: v for k, v in built.items() if k != "checkpoint"},
        "data": {k: v for k, v in data.items() if k not in free},
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

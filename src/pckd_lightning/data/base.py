"""The data module all datasets share: subsampling, view selection, transforms and loaders live here once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from pckd_lightning.data.classes import select_classes
from pckd_lightning.data.datasets import ImageSource, IndexedDataset
from pckd_lightning.data.sampling import EpochShuffleSampler, per_class_subsample
from pckd_lightning.data.transforms import (
    Crop,
    MultiViewRotation,
    WeakStrongViews,
    train_transform,
    val_transform,
)
from pckd_lightning.errors import ConfigError, DataError
from pckd_lightning.schema.fields import Int, accepts

#: the smallest image side every model of the zoo takes: the VGGs max-pool their input three times
#: (2x2, stride 2) before the last block, so a side below 8 leaves them an empty feature map
MIN_IMAGE_SIZE = 8
#: how a multi-view batch is made: PCKD's rotated copies, or MLKD's weak + strong augmentation (2 views)
VIEW_RECIPES = ("rotation", "weak_strong")
#: what validation (checkpoint choice, sweeps) reads: the evaluation split, or images held out of training
VAL_SOURCES = ("test", "holdout")


def unused_settings(data: Mapping[str, Any]) -> frozenset[str]:
    """The keys of a data config that its other settings leave without effect (the holdout's size, unless
    validation reads the holdout): what keys a teacher's recipe or a teacher cache must not compare."""
    return frozenset() if data.get("val_source") == "holdout" else frozenset({"holdout_per_class"})


def check_image_size(image_size: object, dataset: str) -> int:
    """``image_size`` as an int >= :data:`MIN_IMAGE_SIZE`, else a :class:`ConfigError` saying how to fix it."""
    if not accepts(Int(MIN_IMAGE_SIZE), image_size):
        raise ConfigError(
            f"data.image_size={image_size!r} cannot be used for {dataset}: the images must be at least "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (an int), the smallest input every model of the zoo "
            f"takes (the VGGs halve it three times before their last block). Fix: set data.image_size to an "
            f"int >= {MIN_IMAGE_SIZE}, e.g. data.image_size=32 (CIFAR's size)."
        )
    return image_size


class ClassificationDataModule(L.LightningDataModule):
    """Image classification data for distillation.

    Batches are ``(x, y, idx)``: ``x`` is ``[B, C, H, W]`` (``views=1``) or ``[B, V, C, H, W]``
    (``views=V>1``, PCKD's rotated views, see :class:`MultiViewRotation`), ``y`` the labels ``[B]`` and
    ``idx`` the positions of the images in the (subsampled) training or validation set ``[B]``.
    Validation always uses a single un-augmented view.

    ``class_subset=N`` or ``classes`` (original class ids, or a range "first-last") keep some classes only,
    relabelled ``0..k-1`` in the order given (see :mod:`pckd_lightning.data.classes`); :attr:`classes` says
    which original class each label is.

    Subclasses provide the raw sources (:meth:`_load_sources`), the class count (``known_classes``, or
    ``dataset_classes`` when only the files tell), ``image_size`` and the normalization ``mean``/``std``;
    they may override the crop (:meth:`_train_crop`) and the evaluation center crop
    (:meth:`_val_center_crop`).
    """

    in_channels: int = 3
    mean: Sequence[float]
    std: Sequence[float]
    #: probability of the horizontal flip in training (0 turns it off)
    flip_p: float = 0.5
    #: the data set's class count when it is fixed (CIFAR-100: 100), so the config check can bound
    #: ``data.classes`` before any work; None where only the files tell (image folders)
    known_classes: ClassVar[int | None] = None
    #: whether ``data.root`` is the data set itself (an image folder) rather than where a fixed data set is
    #: stored: then it is part of what a teacher cache is keyed by
    root_is_data: ClassVar[bool] = False

    def __init__(
        self,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        views: int = 1,
        train_per_class: int | None = None,
        val_per_class: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        class_subset: int | None = None,
        classes: Sequence[int] | str | None = None,
        split_seed: int = 0,
        view_recipe: str = "rotation",
        val_source: str = "test",
        holdout_per_class: int = 50,
        aug_seed: int | None = None,
    ) -> None:
        super().__init__()
        checks = (("batch_size", batch_size, 1), ("views", views, 1), ("num_workers", num_workers, 0))
        for name, value, low in checks:
            if value < low:
                raise ConfigError(f"data.{name} must be >= {low}, got {value}.")
        if val_batch_size is not None and val_batch_size < 1:
            raise ConfigError(f"data.val_batch_size must be >= 1 (or null), got {val_batch_size}.")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.views = views
        self.view_recipe = self._check_view_recipe(view_recipe, views)
        self.train_per_class = train_per_class
        self.val_per_class = val_per_class
        self.seed = seed
        #: the augmentation stream: each training view a function of (aug_seed, epoch, image, view) alone;
        #: None draws from the loader workers' generators (seeded by ``seed``)
        self.aug_seed = aug_seed
        #: chooses the subsampled (and, for digits, the held-out) images: fixed by default so that runs
        #: with different ``seed`` train and are evaluated on the same images
        self.split_seed = split_seed
        self.pin_memory = pin_memory
        #: keep only labels 0..class_subset-1 (small, fast benchmarks); None keeps every class
        self.class_subset = class_subset
        self._classes_option = classes
        # refused now, before any data is read; a count that only the files tell bounds it in :attr:`classes`
        select_classes(classes, class_subset, self.known_classes)
        self._kept_classes: tuple[int, ...] | None = None
        if val_source not in VAL_SOURCES:
            raise ConfigError(f"data.val_source={val_source!r} is not one of {list(VAL_SOURCES)}.")
        if holdout_per_class < 1:
            raise ConfigError(f"data.holdout_per_class must be >= 1, got {holdout_per_class}.")
        #: "holdout": validate on ``holdout_per_class`` training images per class (fixed by ``split_seed``)
        #: and keep the evaluation split for one final test, so tuning never sees it
        self.val_source = val_source
        self.holdout_per_class = holdout_per_class
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        #: the evaluation split when validation is held out of training (``val_source="holdout"``)
        self.test_set: IndexedDataset | None = None

    # ---- what a dataset defines -------------------------------------------------------------------
    @property
    def dataset_classes(self) -> int:
        """How many classes the data set has (``num_classes`` is fewer with ``class_subset``/``classes``)."""
        if self.known_classes is None:
            raise NotImplementedError
        return self.known_classes

    @property
    def classes(self) -> tuple[int, ...]:
        """The original class id of each label, in label order (label ``i`` is class ``classes[i]``)."""
        if self._kept_classes is None:
            chosen = select_classes(self._classes_option, self.class_subset, self.dataset_classes)
            self._kept_classes = chosen if chosen is not None else tuple(range(self.dataset_classes))
        return self._kept_classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str] | None:
        """Human-readable names of all the data set's classes, by original id, where it has them."""
        return None

    @property
    def label_names(self) -> list[str] | None:
        """The kept classes' names in label order (:attr:`class_names` picked by :attr:`classes`)."""
        names = self.class_names
        return None if names is None else [names[c] for c in self.classes]

    def _load_sources(self) -> tuple[ImageSource, ImageSource]:
        """The full (not subsampled) training and evaluation sources."""
        raise NotImplementedError

    def _train_crop(self) -> Crop | None:
        """The training crop; ``None``: CIFAR-style ``RandomCrop(image_size, padding=image_size // 8)``."""
        return None

    def _val_center_crop(self) -> int | None:
        """Size of the evaluation center crop (after a resize), or ``None`` to evaluate images as they are."""
        return None

    # ---- shared machinery -------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Single-view augmentation for ``views=1``, else :class:`MultiViewRotation` or MLKD's :class:`WeakStrongViews`."""
        common: dict[str, Any] = {
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "flip_p": self.flip_p,
            "crop": self._train_crop(),
        }
        if self.views == 1:
            return train_transform(**common)
        if self.view_recipe == "weak_strong":
            return WeakStrongViews(**common)
        return MultiViewRotation(views=self.views, **common)

    def _check_view_recipe(self, recipe: object, views: int) -> str:
        if recipe not in VIEW_RECIPES:
            raise ConfigError(f"data.view_recipe={recipe!r} is not one of {list(VIEW_RECIPES)}.")
        if recipe == "weak_strong":
            if views != WeakStrongViews.views:
                raise ConfigError(
                    f"data.view_recipe=weak_strong (MLKD) makes 2 views (weak, strong), but data.views={views}; "
                    "use distill=mlkd (views: 2) or set data.views=2"
                )
            if type(self).train_dataloader is not ClassificationDataModule.train_dataloader:
                raise ConfigError(
                    f"{type(self).__name__} augments batches itself and has no weak/strong recipe (MLKD); "
                    "use the ordinary data module of the data set (e.g. data=cifar100)"
                )
        return recipe

    def val_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return val_transform(self.mean, self.std, center_crop=self._val_center_crop())

    def setup(self, stage: str | None = None) -> None:
        """Load the sources and subsample them once; later calls (one per Lightning stage) are no-ops."""
        if self.train_set is not None:
            return
        train_src, val_src = self._load_sources()
        # original class id -> label (-1: not kept); sources keep their ids, the datasets carry the labels
        label_of = np.full(self.dataset_classes, -1, dtype=np.int64)
        label_of[list(self.classes)] = np.arange(self.num_classes)
        train_labels, eval_labels = label_of[train_src.labels], label_of[val_src.labels]
        train_pool = np.flatnonzero(train_labels >= 0)  # all of them when every class is kept
        eval_pool = np.flatnonzero(eval_labels >= 0)
        if self.val_source == "holdout":
            held = self._subsample(train_labels, train_pool, self.holdout_per_class, "holdout_per_class")
            train_pool = np.setdiff1d(train_pool, held)
            left = np.bincount(train_labels[train_pool], minlength=self.num_classes)[: self.num_classes]
            if (left == 0).any():
                raise DataError(
                    f"data.holdout_per_class={self.holdout_per_class} holds out every training image of class "
                    f"{self.classes[int(np.flatnonzero(left == 0)[0])]}; lower data.holdout_per_class "
                    "(or use data.val_source=test)"
                )
            val = self._subsample(train_labels, held, self.val_per_class, "val_per_class")
            test = self._subsample(eval_labels, eval_pool, self.val_per_class, "val_per_class")
            self.test_set = IndexedDataset(val_src, test, self.val_transform(), label_of)
            val_source_images = train_src
        else:
            val = self._subsample(eval_labels, eval_pool, self.val_per_class, "val_per_class")
            val_source_images = val_src
        train = self._subsample(train_labels, train_pool, self.train_per_class, "train_per_class")
        self.train_set = IndexedDataset(train_src, train, self.train_transform(), label_of, self.aug_seed)
        self.val_set = IndexedDataset(val_source_images, val, self.val_transform(), label_of)

    def _subsample(
        self, labels: np.ndarray, pool: np.ndarray, per_class: int | None, option: str
    ) -> np.ndarray:
        """``per_class`` images of each label from ``pool`` (indices into ``labels``), fixed by ``split_seed``."""
        return pool[
            per_class_subsample(
                labels[pool],
                per_class,
                self.split_seed,
                num_classes=self.num_classes,
                option=f"data.{option}",
                class_names=self.label_names,
            )
        ]

    @property
    def train_labels(self) -> np.ndarray:
        """Labels of the (subsampled) training set in dataset-index order; loads the data if needed."""
        self.setup("fit")
        assert self.train_set is not None
        return self.train_set.labels

    def _eval_sampler(self, dataset: IndexedDataset, stage: str) -> Sampler | None:
        """Under DDP, this rank's share of an evaluation split with no image twice: Lightning's default
        ``DistributedSampler`` pads the split to a multiple of the world size, and the padded images would
        count twice in ``val/top1``. Lightning keeps a sampler that is already distributed.

        Not where a rank's share could be empty or cut to no batch (a split smaller than the world, a
        fractional ``limit_*_batches`` of the shares, ``overfit_batches``; debug settings, whose scores are
        partial anyway): a rank without a batch skips the evaluation the others synchronize at its end."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or len(dataset) < trainer.world_size:
            return None
        limit = trainer.limit_val_batches if stage == "validate" else trainer.limit_test_batches
        if trainer.overfit_batches or (isinstance(limit, float) and limit < 1.0):
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def _loader(self, dataset: IndexedDataset, stage: str) -> DataLoader:
        train = stage == "fit"
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.val_batch_size,
            # the order is a function of (seed, epoch), so a resumed run continues the same sequence
            sampler=EpochShuffleSampler(len(dataset), self.seed)
            if train
            else self._eval_sampler(dataset, stage),
            # a private generator makes the workers' augmentation seeds follow `seed` too
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # a last training batch of a single image would break BatchNorm in training mode
            drop_last=train and len(dataset) % self.batch_size == 1,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, "fit")

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, "validate")

    def test_dataloader(self) -> DataLoader:
        """The evaluation split: with ``val_source="holdout"`` the one validation never saw, else the
        validation split again (CIFAR-100's test set is its only held-out split)."""
        self.setup("test")
        evaluated = self.val_set if self.test_set is None else self.test_set
        assert evaluated is not None
        return self._loader(evaluated, "test")

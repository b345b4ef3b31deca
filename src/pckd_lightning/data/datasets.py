"""Image sources and the dataset wrapper that yields ``(image, label, index)``.

A *source* only knows how to fetch raw images and labels; the wrapper adds the subset, the transform and the
index, so the same source can serve a training and an evaluation view and every data module returns the
same sample format (CRD's memory bank needs the index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pckd_lightning.data.augmentation import ViewSeeds


class ImageSource(Protocol):
    """Random access to raw images (PIL, RGB) and their integer labels."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image: ...


class ArraySource:
    """Images held in memory as a uint8 array ``[N, H, W, 3]``; PIL images are built lazily per access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ArraySource expects uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"ArraySource: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])  # uint8 [H, W, 3] -> RGB


class IndexedDataset(Dataset):
    """The subset ``indices`` of a source, transformed; item ``i`` is ``(transform(image), label, i)``.

    ``i`` is the position in this (possibly subsampled) dataset, i.e. in ``0..len(self)-1``. ``label_of``
    maps the source's class ids to the run's labels (a kept subset of classes, relabelled ``0..k-1``); the
    source keeps its ids, so one source serves every selection.
    """

    def __init__(
        self,
        source: ImageSource,
        indices: np.ndarray,
        transform: Callable[[Image.Image], Any],
        label_of: np.ndarray | None = None,
        aug_seed: int | None = None,
    ):
        self.source = source
        #: the augmentation stream's seed (``data.aug_seed``); None draws from the worker's generator
        self.aug_seed = aug_seed
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        labels = source.labels[self.indices]
        self.labels = labels if label_of is None else label_of[labels]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        """``key`` is an index, or ``(index, epoch)`` from the training sampler: then, with ``aug_seed``, the
        image's views are drawn from the stream of ``(aug_seed, epoch, source image, view)`` alone."""
        i, epoch = key if isinstance(key, tuple) else (key, None)
        j = int(self.indices[i])
        image = self.source.image(j)
        if epoch is None or self.aug_seed is None:
            return self.transform(image), int(self.labels[i]), int(i)
        seeds = ViewSeeds(self.aug_seed, int(epoch), j)
        if getattr(self.transform, "seeds_views", False):
            return self.transform(image, seeds), int(self.labels[i]), int(i)
        with seeds.view(0):
            return self.transform(image), int(self.labels[i]), int(i)

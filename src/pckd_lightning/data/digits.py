"""scikit-learn's 8x8 handwritten digits as a tiny RGB dataset: the default data, shipped with sklearn.

It lets the whole pipeline (and CI) run with no download: 1,797 images, 10 classes, upsampled to the
image size the CIFAR models expect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pckd_lightning.data.base import ClassificationDataModule, check_image_size
from pckd_lightning.data.datasets import ArraySource
from pckd_lightning.errors import ConfigError

NUM_CLASSES = 10


def load_digit_images(image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 ``[N, image_size, image_size, 3]`` (gray repeated) and labels ``[N]``.

    Pixel values 0..16 are scaled to 0..255, then resized bilinearly before quantizing to uint8.
    """
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    gray = x.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    return np.repeat(gray[..., None], 3, axis=-1), digits.target.astype(np.int64)


class DigitsDataModule(ClassificationDataModule):
    """sklearn digits with a deterministic stratified train/val split (``val_fraction``, ``split_seed``).

    The flip is off by default (``flip_p=0``) since a mirrored digit is another glyph; the crop padding is
    ``image_size // 8``. Normalization uses the mean/std of the training split (gray, so equal across the
    three channels).
    """

    known_classes = NUM_CLASSES

    def __init__(self, image_size: int = 32, val_fraction: float = 0.2, flip_p: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        image_size = check_image_size(image_size, "the digits data")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}.")
        self._image_size = image_size
        self.val_fraction = val_fraction
        self.flip_p = flip_p
        self.mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # replaced by the train split's statistics in setup
        self.std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(NUM_CLASSES)]

    def _load_sources(self) -> tuple[ArraySource, ArraySource]:
        images, labels = load_digit_images(self._image_size)
        # sklearn's split with an integer random_state: deterministic, independent of the global RNG
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=self.val_fraction, stratify=labels, random_state=self.split_seed
        )
        train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
        train_pixels = images[train_idx, ..., 0].astype(np.float64) / 255.0
        self.mean = (float(train_pixels.mean()),) * 3
        self.std = (float(train_pixels.std()),) * 3
        train = ArraySource(images[train_idx], labels[train_idx])
        return train, ArraySource(images[val_idx], labels[val_idx])

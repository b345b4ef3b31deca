"""ImageNet-style class folders (``root/train/<class>/*``, ``root/val/<class>/*``) via ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from pckd_lightning.data.base import ClassificationDataModule
from pckd_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Crop
from pckd_lightning.errors import DataError

_LAYOUT = "expected root/train/<class>/<image> and root/val/<class>/<image> with the same class folders"


class ImageFolderSource:
    """An :class:`ImageSource` over a torchvision ImageFolder (files are opened only when accessed)."""

    def __init__(self, folder: Path) -> None:
        try:
            self.folder = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:  # e.g. a class folder without any image file
            raise DataError(f"ImageFolder: cannot read {folder}: {e}; {_LAYOUT}.") from e
        self.labels = np.asarray(self.folder.targets, dtype=np.int64)
        self.classes: list[str] = list(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def image(self, i: int) -> Image.Image:
        return self.folder.loader(self.folder.samples[i][0])


class ImageFolderDataModule(ClassificationDataModule):
    """ImageNet-style data: RandomResizedCrop + flip for training (per view with ``views>1``),
    ``Resize(image_size / 0.875) + CenterCrop(image_size)`` for evaluation, ImageNet mean/std."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, root: str | Path, image_size: int = 224, flip_p: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self._image_size = image_size
        self.flip_p = flip_p
        self._classes: list[str] | None = None

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def class_names(self) -> list[str]:
        """Class folder names, sorted as ImageFolder labels them; train/ and val/ must have the same."""
        if self._classes is None:
            found = {}
            for split in ("train", "val"):
                folder = self.root / split
                if not folder.is_dir():
                    raise DataError(f"ImageFolder: {folder} not found; {_LAYOUT}.")
                found[split] = sorted(p.name for p in folder.iterdir() if p.is_dir())
                if not found[split]:
                    raise DataError(f"ImageFolder: {folder} has no class folders; {_LAYOUT}.")
            if found["train"] != found["val"]:
                only_train = sorted(set(found["train"]) - set(found["val"]))
                only_val = sorted(set(found["val"]) - set(found["train"]))
                raise DataError(
                    f"ImageFolder: class folders of {self.root / 'train'} and {self.root / 'val'} differ "
                    f"(only in train: {only_train[:5]}, only in val: {only_val[:5]}); {_LAYOUT}."
                )
            self._classes = found["train"]
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _train_crop(self) -> Crop:
        return T.RandomResizedCrop(self._image_size)

    def _val_center_crop(self) -> int:
        return self._image_size

    def _load_sources(self) -> tuple[ImageFolderSource, ImageFolderSource]:
        classes = self.class_names  # validates the layout first, with a clearer message than ImageFolder's
        train, val = ImageFolderSource(self.root / "train"), ImageFolderSource(self.root / "val")
        for source in (train, val):
            if source.classes != classes:
                found = source.classes[:5]
                raise DataError(f"ImageFolder: {source.folder.root} has classes {found}...; {_LAYOUT}.")
        return train, val

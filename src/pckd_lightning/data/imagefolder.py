"""ImageNet-style class folders (``root/train/<class>/*``, ``root/val/<class>/*``) via ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from pckd_lightning.data.base import ClassificationDataModule, check_image_size
from pckd_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Crop
from pckd_lightning.errors import DataError

_LAYOUT = "expected root/train/<class>/<image> and root/val/<class>/<image> with the same class folders"


def _fix_hint(root: Path) -> str:
    return (
        f"Fix: point data.root at the folder that holds train/ and val/ (currently {root}), with one sub-folder of "
        "images per class in each, the same class folder names in both (labels follow their sorted names)."
    )


class ImageFolderSource:
    """An :class:`ImageSource` over a torchvision ImageFolder (files are opened only when accessed)."""

    def __init__(self, folder: Path) -> None:
        try:
            self.folder = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as e:  # e.g. a class folder without any image file
            raise DataError(
                f"ImageFolder: cannot read {folder}: {e}; {_LAYOUT}. {_fix_hint(folder.parent)}"
            ) from e
        self.labels = np.asarray(self.folder.targets, dtype=np.int64)
        self.classes: list[str] = list(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def image(self, i: int) -> Image.Image:
        path = self.folder.samples[i][0]
        try:
            return self.folder.loader(path)
        except OSError as e:  # PIL's UnidentifiedImageError (not an image) or a truncated image file
            raise DataError(
                f"ImageFolder: cannot read the image {path} ({type(e).__name__}: {e}). Fix: replace the file "
                "with a readable image (JPEG, PNG, ...) or delete it."
            ) from e


class ImageFolderDataModule(ClassificationDataModule):
    """ImageNet-style data: RandomResizedCrop + flip for training (per view with ``views>1``),
    ``Resize(image_size / 0.875) + CenterCrop(image_size)`` for evaluation, ImageNet mean/std."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    root_is_data = True

    def __init__(self, root: str | Path, image_size: int = 224, flip_p: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self._image_size = check_image_size(image_size, "ImageFolder data")
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
                    raise DataError(f"ImageFolder: {folder} not found; {_LAYOUT}. {_fix_hint(self.root)}")
                found[split] = sorted(p.name for p in folder.iterdir() if p.is_dir())
                if not found[split]:
                    raise DataError(
                        f"ImageFolder: {folder} has no class folders; {_LAYOUT}. {_fix_hint(self.root)}"
                    )
            if found["train"] != found["val"]:
                only_train = sorted(set(found["train"]) - set(found["val"]))
                only_val = sorted(set(found["val"]) - set(found["train"]))
                raise DataError(
                    f"ImageFolder: class folders of {self.root / 'train'} and {self.root / 'val'} differ "
                    f"(only in train: {only_train[:5]}, only in val: {only_val[:5]}); {_LAYOUT}. Fix: rename, "
                    "add or remove class folders so that train/ and val/ hold the same class names."
                )
            self._classes = found["train"]
        return self._classes

    @property
    def dataset_classes(self) -> int:
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
                raise DataError(
                    f"ImageFolder: {source.folder.root} has classes {found}...; {_LAYOUT}. {_fix_hint(self.root)}"
                )
        return train, val

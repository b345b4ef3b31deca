"""Data modules yielding ``(image, label, index)`` batches, with PCKD's rotated multi-view augmentation."""

from pckd_lightning.data.base import ClassificationDataModule
from pckd_lightning.data.cifar100 import CIFAR100DataModule, read_cifar100
from pckd_lightning.data.digits import DigitsDataModule
from pckd_lightning.data.gpu_resident import GPUResidentCIFAR100DataModule
from pckd_lightning.data.imagefolder import ImageFolderDataModule
from pckd_lightning.data.sampling import per_class_subsample
from pckd_lightning.data.transforms import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiViewRotation,
    train_transform,
    val_transform,
)

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "GPUResidentCIFAR100DataModule",
    "ImageFolderDataModule",
    "MultiViewRotation",
    "per_class_subsample",
    "read_cifar100",
    "train_transform",
    "val_transform",
]

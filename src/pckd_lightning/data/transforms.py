"""Image transforms: the standard train/val pipelines, PCKD's rotated views and MLKD's weak/strong views.

Randomness comes from torch's global generator (as in torchvision). With an augmentation stream
(:class:`~pckd_lightning.data.augmentation.ViewSeeds`, ``data.aug_seed``) each view is drawn from its own
seeded stream; without one, from the generator DataLoader seeds per worker. View 0 of every multi-view
transform is drawn as the single-view transform draws it (crop, then flip), so with one stream a KD run's
images are view 0 of a PCKD run's and MLKD's weak view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from pckd_lightning.data.augmentation import ViewSeeds
from pckd_lightning.errors import ConfigError

#: Per-channel mean/std of the CIFAR-100 training images (values in [0, 1]), as in the CRD/PCKD code.
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, float, float] = (0.2675, 0.2565, 0.2761)
#: The usual ImageNet statistics, used for ImageFolder data.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Crop = Callable[[Image.Image], Image.Image]


def _crop_or_default(image_size: int, padding: int | None, crop: Crop | None) -> Crop:
    """CIFAR-style ``RandomCrop(size, padding)`` unless an explicit crop (e.g. RandomResizedCrop) is given.

    The default padding, ``image_size // 8``, is CIFAR's 4 pixels at 32 and scales with the image.
    """
    if crop is not None:
        return crop
    return T.RandomCrop(image_size, padding=image_size // 8 if padding is None else padding)


def train_transform(
    image_size: int = 32,
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    padding: int | None = None,
    flip_p: float = 0.5,
    crop: Crop | None = None,
) -> T.Compose:
    """The standard single-view augmentation: random crop, horizontal flip, ToTensor, Normalize."""
    return T.Compose(
        [
            _crop_or_default(image_size, padding, crop),
            T.RandomHorizontalFlip(flip_p),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def val_transform(
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    center_crop: int | None = None,
    crop_ratio: float = 0.875,
) -> T.Compose:
    """Evaluation transform: ToTensor + Normalize, after ``Resize(size / crop_ratio) + CenterCrop(size)``
    when ``center_crop`` is given (the ImageNet protocol)."""
    resize: list[Callable] = []
    if center_crop is not None:
        resize = [T.Resize(int(center_crop / crop_ratio)), T.CenterCrop(center_crop)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])


def check_flip_p(transform: str, flip_p: float) -> None:
    if not 0.0 <= flip_p <= 1.0:
        raise ConfigError(f"{transform} needs 0 <= flip_p <= 1, got {flip_p}.")


class MultiViewRotation:
    """Turn one image into ``views`` augmented views, view k rotated by k·90° counter-clockwise.

    PCKD (method doc §1) treats the rotated copies as extra samples of the same class. The flip is drawn
    once (with view 0's crop, after it) and shared by all views so that the views differ only by crop and
    rotation; the crop is drawn independently per view. Output: a tensor ``[views, C, H, W]``.
    """

    #: takes the image's :class:`ViewSeeds` and draws each view from its own stream
    seeds_views = True

    def __init__(
        self,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR100_MEAN,
        std: Sequence[float] = CIFAR100_STD,
        padding: int | None = None,
        flip_p: float = 0.5,
        views: int = 4,
        crop: Crop | None = None,
    ) -> None:
        if views < 1:
            raise ConfigError(f"MultiViewRotation needs views >= 1, got {views}.")
        check_flip_p(type(self).__name__, flip_p)
        self.crop = _crop_or_default(image_size, padding, crop)
        self.flip_p = flip_p
        self.views = views
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, image: Image.Image, seeds: ViewSeeds | None = None) -> torch.Tensor:
        flip = False
        out = []
        for k in range(self.views):
            with nullcontext() if seeds is None else seeds.view(k):
                crop = self.crop(image)
                if k == 0:  # as train_transform draws: the crop, then the flip
                    flip = torch.rand(1).item() < self.flip_p
            view = self.to_tensor(TF.hflip(crop) if flip else crop)
            if view.shape[1] != view.shape[2]:
                raise ConfigError(
                    f"MultiViewRotation needs square crops to stack rotated views, got {tuple(view.shape)}."
                )
            out.append(torch.rot90(view, k, dims=(1, 2)))
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(views={self.views}, flip_p={self.flip_p}, crop={self.crop})"


class WeakStrongViews:
    """MLKD's two views of an image (Jin et al., CVPR 2023): view 0 weak, view 1 strong.

    Weak: the standard crop + flip. Strong: an independent crop + flip followed by RandAugment with 2 ops
    of magnitude 10, as the MLKD code's ``get_cifar100_train_transform_strong`` (there its own RandAugment
    implementation; here torchvision's, whose op list and magnitude scale differ slightly).
    Output: a tensor ``[2, C, H, W]``.
    """

    views = 2
    seeds_views = True

    def __init__(
        self,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR100_MEAN,
        std: Sequence[float] = CIFAR100_STD,
        padding: int | None = None,
        flip_p: float = 0.5,
        crop: Crop | None = None,
        num_ops: int = 2,
        magnitude: int = 10,
    ) -> None:
        check_flip_p(type(self).__name__, flip_p)
        self.weak = train_transform(image_size, mean, std, padding, flip_p, crop)
        self.strong = T.Compose(
            [
                _crop_or_default(image_size, padding, crop),
                T.RandomHorizontalFlip(flip_p),
                T.RandAugment(num_ops=num_ops, magnitude=magnitude),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )

    def __call__(self, image: Image.Image, seeds: ViewSeeds | None = None) -> torch.Tensor:
        views = []
        for k, transform in enumerate((self.weak, self.strong)):
            with nullcontext() if seeds is None else seeds.view(k):
                views.append(transform(image))
        return torch.stack(views)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weak={self.weak}, strong={self.strong})"

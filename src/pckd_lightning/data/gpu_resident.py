"""CIFAR-size training data kept on the device and augmented there, batch by batch, with no worker processes.

The ordinary path (:class:`~pckd_lightning.data.CIFAR100DataModule`) decodes every sample through PIL in
DataLoader workers: with PCKD's four views that is 4 crops, 4 ``ToTensor`` and 4 ``rot90`` per image, which
a few CPU cores cannot feed to a fast GPU. CIFAR-100's training set is only 150 MB as uint8, so here it
lives on the device as one tensor ``[N, 32, 32, 3]`` and each batch is made there by a handful of vectorized
kernels (no Python loop over samples):

* horizontal flip, drawn once per image and shared by its views,
* ``RandomCrop(32, padding=4)`` (zero padding), drawn independently per view,
* view ``k`` rotated by ``k·90°`` counter-clockwise (``torch.rot90(view, k, dims=(1, 2))``),
* ``ToTensor`` + ``Normalize`` (the same float32 arithmetic as torchvision, so pixels match exactly),

i.e. the semantics of :class:`~pckd_lightning.data.MultiViewRotation` (and, with ``views=1``, of the
single-view ``RandomCrop + RandomHorizontalFlip`` pipeline; flip-then-crop and crop-then-flip draw the same
distribution). Flip, crop and rotation are folded into one gather from the zero-padded uint8 images.
Randomness (the epoch's shuffle and every augmentation draw) comes from a ``torch.Generator`` on the device
seeded with the data module's seed and the epoch, so a run is reproducible on a given device type (CPU and
CUDA generators draw different streams) and resumes at an epoch boundary like the ordinary path. Batches
are ``(x, y, idx)`` exactly as in the ordinary path, already on the device. It also runs on CPU
(``device="cpu"``), which is how it is tested; the ordinary DataLoader path stays the default everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pckd_lightning.data.cifar100 import CIFAR100DataModule
from pckd_lightning.data.sampling import epoch_seed
from pckd_lightning.devices import resolve_device
from pckd_lightning.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def rotation_index_maps(
    size: int, views: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source row/column of every output pixel of view ``k`` = ``rot90(crop, k)`` (counter-clockwise).

    Returns ``rows, cols`` of shape ``[views, size, size]``:
    ``view_k[i, j] = crop[rows[k, i, j], cols[k, i, j]]``.
    """
    i = torch.arange(size, device=device).view(size, 1).expand(size, size)
    j = torch.arange(size, device=device).view(1, size).expand(size, size)
    last = size - 1
    maps = {  # torch.rot90(x, k, dims=(0, 1))[i, j] == x[rows, cols]
        0: (i, j),
        1: (j, last - i),
        2: (last - i, last - j),
        3: (last - j, i),
    }
    rows = torch.stack([maps[k % 4][0] for k in range(views)])
    cols = torch.stack([maps[k % 4][1] for k in range(views)])
    return rows, cols


@dataclass
class AugmentParams:
    """One batch's random draws: ``flips [B]`` (bool, shared by the views), ``tops, lefts [B, V]``."""

    flips: torch.Tensor
    tops: torch.Tensor
    lefts: torch.Tensor


def draw_params(
    batch: int,
    views: int,
    padding: int,
    flip_p: float,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> AugmentParams:
    """Flip per image (probability ``flip_p``) and crop offsets per view, uniform in ``[0, 2·padding]``."""
    flips = torch.rand(batch, generator=generator, device=device) < flip_p
    offsets = torch.randint(0, 2 * padding + 1, (2, batch, views), generator=generator, device=device)
    return AugmentParams(flips=flips, tops=offsets[0], lefts=offsets[1])


def _channel_stats(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=device)


def normalize_uint8(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """``[..., H, W, C]`` uint8 -> ``[..., C, H, W]`` float32, ``(x / 255 - mean) / std`` as torchvision does.

    With ``channels_last`` the result keeps the HWC memory order (``torch.channels_last`` once flattened
    to 4-D); otherwise it is contiguous NCHW like the ordinary path's batches.
    """
    x = images.movedim(-1, -3)
    if not channels_last:
        x = x.contiguous()
    x = x.float().div_(255)
    shape = (-1, 1, 1)
    return x.sub_(mean.view(shape)).div_(std.view(shape))


def multiview_rotation_batch(
    images: torch.Tensor,
    params: AugmentParams,
    padding: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    rotation_maps: tuple[torch.Tensor, torch.Tensor] | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Augment uint8 images ``[B, H, W, C]`` (H == W) into views ``[B, V, C, H, W]`` float32 on their device.

    View ``k`` of image ``b`` is ``rot90(crop(flip_b(pad(image_b)), tops[b, k], lefts[b, k]), k)``,
    normalized. One gather does flip, crop and rotation: no loop over samples or views.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [B, H, W, C], got {images.dtype} {tuple(images.shape)}")
    batch, height, width, _ = images.shape
    if height != width:
        raise ValueError(f"rotated views need square images, got {height}x{width}")
    views = params.tops.shape[1]
    if rotation_maps is None:
        rotation_maps = rotation_index_maps(height, views, images.device)
    rot_rows, rot_cols = rotation_maps
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))  # zero fill, like RandomCrop(padding=)
    padded_width = width + 2 * padding
    rows = params.tops[:, :, None, None] + rot_rows[None]  # [B, V, S, S] rows of the padded image
    cols = params.lefts[:, :, None, None] + rot_cols[None]
    # the flip of the padded image maps column q to (padded_width - 1 - q)
    cols = torch.where(params.flips[:, None, None, None], padded_width - 1 - cols, cols)
    sample = torch.arange(batch, device=images.device)[:, None, None, None]
    views_hwc = padded[sample, rows, cols]  # [B, V, S, S, C]
    return normalize_uint8(views_hwc, mean, std, channels_last=channels_last)


class ResidentTrainLoader:
    """An epoch iterable of augmented batches ``(x, y, idx)`` from uint8 images held on one device.

    ``x`` is ``[B, V, C, H, W]`` (``views > 1``) or ``[B, C, H, W]`` (``views == 1``), float32; ``y`` the
    labels and ``idx`` the positions ``0..N-1`` in ``images``, both int64 ``[B]``. Each ``iter()`` is one
    epoch: a permutation (every sample exactly once; the last batch is short unless ``drop_last``), then
    each batch's augmentation draws, all from a generator on the device seeded with ``(seed, epoch)``
    alone, like the ordinary path's :class:`~pckd_lightning.data.sampling.EpochShuffleSampler`: Lightning
    calls :meth:`set_epoch` (found as ``loader.sampler``) before every epoch, so a run resumed at an epoch
    boundary sees the same batches as an uninterrupted one. Used alone, the epoch advances after each
    complete pass.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        views: int = 4,
        padding: int = 4,
        flip_p: float = 0.5,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1 or views < 1:
            raise ConfigError(f"batch_size and views must be >= 1, got {batch_size} and {views}")
        self.images = images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.device = images.device
        self.batch_size = batch_size
        self.views = views
        self.padding = padding
        self.flip_p = flip_p
        self.mean = _channel_stats(mean, self.device)
        self.std = _channel_stats(std, self.device)
        self.seed = seed
        self.epoch = 0
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.rotation_maps = rotation_index_maps(images.shape[1], views, self.device)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def sampler(self) -> ResidentTrainLoader:
        """Where Lightning looks for ``set_epoch``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator of epoch ``epoch`` (same seeding rule as the ordinary path's sampler)."""
        return torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch))

    def augment(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented views of uint8 images ``[B, H, W, C]``, drawn from ``generator``."""
        params = draw_params(len(images), self.views, self.padding, self.flip_p, generator, self.device)
        x = multiview_rotation_batch(
            images, params, self.padding, self.mean, self.std, self.rotation_maps, self.channels_last
        )
        return x[:, 0] if self.views == 1 else x

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.images)
        generator = self.epoch_generator(self.epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.augment(self.images[idx], generator), self.labels[idx], idx
        self.epoch += 1


class ResidentEvalLoader:
    """Plain (un-augmented, single-view, in order) normalized batches ``(x [B, C, H, W], y, idx)``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.mean = _channel_stats(mean, images.device)
        self.std = _channel_stats(std, images.device)
        self.channels_last = channels_last

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.images), self.batch_size):
            idx = torch.arange(
                start, min(start + self.batch_size, len(self.images)), device=self.images.device
            )
            x = normalize_uint8(
                self.images[start : start + self.batch_size], self.mean, self.std, self.channels_last
            )
            yield x, self.labels[start : start + self.batch_size], idx


class GPUResidentCIFAR100DataModule(CIFAR100DataModule):
    """:class:`CIFAR100DataModule` whose train (and, by default, val) batches are made on the device.

    Same options, subsampling and batch format as the ordinary module, plus ``device`` (``None``/``"auto"``:
    the trainer's device when attached to one, else CUDA when available, else CPU), ``resident_val``
    (``False`` keeps the ordinary DataLoader for validation) and ``channels_last`` (batches in that memory
    format). ``num_workers`` and ``pin_memory`` only affect a non-resident validation loader.
    Single-device only (:func:`pckd_lightning.run.check.check_world` refuses it under DDP: every rank would
    draw the same permutation).
    """

    def __init__(
        self,
        root: str | Path,
        device: str | torch.device | None = None,
        resident_val: bool = True,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if self.aug_seed is not None:
            raise ConfigError(
                f"data.aug_seed={self.aug_seed}: the device-resident path draws each batch's augmentation from "
                "(seed, epoch) on the device and has no per-image stream; use data=cifar100 for a shared "
                "augmentation stream, or set data.aug_seed=null"
            )
        self.requested_device = device
        self.resident_val = resident_val
        self.channels_last = channels_last
        self._resident: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def resident_device(self) -> torch.device:
        if self.requested_device in (None, "auto"):
            trainer = getattr(self, "trainer", None)
            if trainer is not None:
                return trainer.strategy.root_device
        return resolve_device(self.requested_device)

    @property
    def padding(self) -> int:
        return self.image_size // 8  # the ordinary path's RandomCrop(image_size, padding=image_size // 8)

    def _upload(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (subsampled) split's uint8 images ``[N, H, W, C]`` and labels on the device (cached)."""
        device = self.resident_device
        cached = self._resident.get(split)
        if cached is not None and cached[0].device == device:
            return cached
        self.setup("fit")
        dataset = self.train_set if split == "train" else self.val_set
        assert dataset is not None
        images = np.ascontiguousarray(dataset.source.images[dataset.indices])
        resident = (
            torch.from_numpy(images).to(device),
            torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64)).to(device),
        )
        self._resident[split] = resident
        return resident

    def train_dataloader(self) -> ResidentTrainLoader:  # type: ignore[override]
        images, labels = self._upload("train")
        return ResidentTrainLoader(
            images,
            labels,
            batch_size=self.batch_size,
            views=self.views,
            padding=self.padding,
            flip_p=self.flip_p,
            mean=self.mean,
            std=self.std,
            seed=self.seed,
            channels_last=self.channels_last,
        )

    def val_dataloader(self) -> Any:
        if not self.resident_val:
            return super().val_dataloader()
        images, labels = self._upload("val")
        return ResidentEvalLoader(
            images, labels, self.val_batch_size, self.mean, self.std, self.channels_last
        )

    def teardown(self, stage: str | None = None) -> None:
        self._resident.clear()

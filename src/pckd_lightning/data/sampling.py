"""Deterministic per-class subsampling, so small runs and tests keep every class balanced and reproducible."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pckd_lightning.errors import DataError


def per_class_subsample(
    labels: Sequence[int] | np.ndarray,
    per_class: int | None,
    seed: int = 0,
    *,
    num_classes: int | None = None,
    option: str = "per_class",
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices of at most ``per_class`` samples of each class, drawn with a private generator.

    The same ``(labels, per_class, seed)`` always gives the same indices, whatever the global RNG state.
    ``per_class=None`` keeps everything. Classes are ``0..num_classes-1`` when ``num_classes`` is given
    (so a class absent from ``labels`` is caught), else the labels present. A class left with no sample
    raises :class:`DataError` naming the class and ``option`` (the config key the value came from).
    Returns sorted int64 indices, so the subset keeps the data's order.
    """
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    classes = np.arange(num_classes) if num_classes is not None else np.unique(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        picked = rng.permutation(members)[: max(per_class, 0)]
        if len(picked) == 0:
            name = f" ({class_names[c]!r})" if class_names is not None else ""
            raise DataError(
                f"{option}={per_class} leaves class {c}{name} with no sample (the split holds "
                f"{len(members)} of it). Use {option} >= 1, or {option}=null to keep all samples, "
                f"and check that the data contains every class."
            )
        chosen.append(picked)
    if not chosen:
        raise DataError(f"{option}={per_class}: the split holds no samples at all.")
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s generator in a run seeded ``seed``: a function of the pair alone.

    Both training paths draw an epoch's shuffle (and the GPU-resident path its augmentations) from a
    generator seeded with this, so a run resumed at an epoch boundary sees the same epochs as an
    uninterrupted one.
    """
    return seed * 1_000_003 + epoch


class EpochShuffleSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """A shuffle whose order is a function of ``(seed, epoch)`` alone; it yields ``(index, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed at epoch k sees the same
    order in epoch k+1 as an uninterrupted run (a single generator would restart from epoch 1's order).
    The epoch travels with each index to the dataset, in whichever worker or rank loads it: the
    augmentation stream (``data.aug_seed``) is seeded by it.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        return iter([(i, self.epoch) for i in order])

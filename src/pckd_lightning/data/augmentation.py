"""One augmentation stream per sweep (common random numbers): each view's random draws are a function of
``(aug_seed, epoch, image, view)`` alone.

Runs of different methods and student seeds that share ``data.aug_seed`` then see the same augmented images
in every epoch, whatever their number of loader workers or DDP ranks, so the differences between methods
are not blurred by the augmentation's noise, and a teacher's outputs for an (epoch, image, view) are the
same in every run of a sweep. A view is drawn from torch's global generator (torchvision's transforms read
it), seeded for that view alone and restored afterwards.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def view_seed(aug_seed: int, epoch: int, image: int, view: int) -> int:
    """A 63-bit seed mixing the four numbers (a BLAKE2 hash: nearby inputs give unrelated seeds)."""
    digest = hashlib.blake2b(struct.pack("<4q", aug_seed, epoch, image, view), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class ViewSeeds:
    """The seeds of one image's views in one epoch; :meth:`view` draws view ``k`` from its own stream."""

    aug_seed: int
    epoch: int
    image: int

    @contextmanager
    def view(self, k: int) -> Iterator[None]:
        """Draws inside come from view ``k``'s stream; the global generator is restored afterwards. The CPU
        generator alone is seeded (``torch.manual_seed`` would also seed every accelerator's: 100x slower)."""
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(view_seed(self.aug_seed, self.epoch, self.image, k))
        try:
            yield
        finally:
            generator.set_state(state)

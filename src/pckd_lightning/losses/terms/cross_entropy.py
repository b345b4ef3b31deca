"""Cross-entropy of the student on view 0: the supervised part of every method."""

from __future__ import annotations

import torch

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms.base import LossTerm


class CrossEntropyTerm(LossTerm):
    """Per-image cross-entropy on view 0 (also the whole loss when training from scratch)."""

    needs_teacher = False

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return ctx.cross_entropy

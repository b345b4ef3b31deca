"""Hinton's logit distillation."""

from __future__ import annotations

import torch

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms.base import LossTerm


class KDTerm(LossTerm):
    """``T² · KL(teacher ‖ student)`` per image, on view 0."""

    def __init__(self, temperature: float = 4.0, weight: float = 1.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)
        self.temperature = temperature

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return LF.kd(ctx.student.logits, ctx.teacher.logits, self.temperature)

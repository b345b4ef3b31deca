"""DIST (Huang et al., NeurIPS 2022): match the correlations of the predictions, not the predictions."""

from __future__ import annotations

import torch

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive
from pckd_lightning.losses.terms.base import LossTerm


class DISTTerm(LossTerm):
    """``T² · (β · inter-class + γ · intra-class)`` Pearson relation loss on view 0 (one value per batch).

    The intra-class part correlates each class's probabilities across the batch, so the term is not
    per-sample and takes no preview weights; under DDP each rank correlates its own batch, as the
    reference code did on each GPU. Defaults: the published CIFAR-100 setting (weight 2, β = γ = 1, T = 4).
    """

    per_sample = False

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 4.0,
        weight: float = 2.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        self.beta = check_positive(name, "beta", beta, allow_zero=True)
        self.gamma = check_positive(name, "gamma", gamma, allow_zero=True)
        self.temperature = check_positive(name, "temperature", temperature)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return LF.dist(ctx.student.logits, ctx.teacher.logits, self.beta, self.gamma, self.temperature)

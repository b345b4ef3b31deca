"""PCKD's feature alignment: an MLP maps student features onto the teacher's, compared by cosine."""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


class FeatureAlignTerm(LossTerm):
    """Owns ``Linear(d_s→k·d_t) → BN → ReLU → Linear(k·d_t→d_t)`` (k = ``hidden_factor``, 16 published)."""

    requires = frozenset({Capability.EMBEDDING})

    views = "all"
    per_sample = False

    def __init__(self, hidden_factor: int = 16, weight: float = 20.0) -> None:
        super().__init__(weight=weight)
        self.hidden_factor = hidden_factor

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        hidden = self.hidden_factor * pair.teacher_dim
        self.projector = nn.Sequential(
            nn.Linear(pair.student_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, pair.teacher_dim),
        )

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return LF.feature_align(self.projector(ctx.student.pooled), ctx.teacher.pooled)

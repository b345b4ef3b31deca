"""Correlation Congruence (Peng et al., ICCV 2019), in the form the CRD benchmark uses."""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_count
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


def correlation_congruence(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """``mean_i Σ_d |δ_i,d| · |δ_i+1,d|`` with δ = e_s − e_t, over consecutive samples (a scalar)."""
    delta = (e_s.float() - e_t.float()).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CCTerm(LossTerm):
    """CC on linear embeddings (``feat_dim``) of both pooled features; one value per batch.

    Owns two trainable linear embeddings, student d_s → feat_dim and teacher d_t → feat_dim (the
    teacher's embedding is trained, the teacher is not). Published (CRD benchmark): feat_dim 128,
    weight 0.02, CE weight 1. Needs a batch of at least 2 images.
    """

    requires = frozenset({Capability.EMBEDDING})

    per_sample = False

    def __init__(self, feat_dim: int = 128, weight: float = 0.02, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)
        self.feat_dim = check_count(type(self).__name__, "feat_dim", feat_dim, minimum=1)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        self.embed_student = nn.Linear(pair.student_dim, self.feat_dim)
        self.embed_teacher = nn.Linear(pair.teacher_dim, self.feat_dim)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        e_s = self.embed_student(ctx.student.pooled)
        e_t = self.embed_teacher(ctx.teacher.pooled.detach())
        return correlation_congruence(e_s, e_t)

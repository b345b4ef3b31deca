"""Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018): match cosine-similarity distributions."""

from __future__ import annotations

import torch

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive, full_precision
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.models.base import Capability


def _conditional_probs(f: torch.Tensor, eps: float) -> torch.Tensor:
    f = f.float().flatten(1)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    kernel = (f @ f.T + 1.0) / 2.0  # cosine similarity mapped to [0, 1]
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean over the B×B entries of ``p_t · log((p_t + ε) / (p_s + ε))`` (a scalar)."""
    with full_precision(f_s):
        p_s, p_t = _conditional_probs(f_s, eps), _conditional_probs(f_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class PKTTerm(LossTerm):
    """PKT on the pooled features; one value per batch. Published: weight 30000, CE weight 1."""

    requires = frozenset({Capability.EMBEDDING})

    per_sample = False

    def __init__(self, eps: float = 1e-7, weight: float = 30000.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)
        self.eps = check_positive(type(self).__name__, "eps", eps)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return pkt(ctx.student.pooled, ctx.teacher.pooled.detach(), self.eps)

"""Similarity-Preserving KD (Tung & Mori, ICCV 2019): match the batch's feature Gram matrices."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import full_precision
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.models.base import Capability


def similarity_preserving(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """``‖G_t − G_s‖²_F / B²`` with G = row-normalized (f fᵀ) over the flattened features (a scalar)."""
    b = f_s.shape[0]
    fs, ft = f_s.float().reshape(b, -1), f_t.float().reshape(b, -1)
    with full_precision(fs):
        g_s = F.normalize(fs @ fs.T, dim=1)
        g_t = F.normalize(ft @ ft.T, dim=1)
    return (g_t - g_s).square().sum() / (b * b)


class SPTerm(LossTerm):
    """SP on the last stage output (the CRD benchmark's ``feat[-2]``); one value per batch.

    Published (CRD benchmark, mdistiller): weight 3000, CE weight 1.
    """

    requires = frozenset({Capability.FEATURE_MAPS})

    per_sample = False

    def __init__(self, weight: float = 3000.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return similarity_preserving(ctx.student.stages[-1], ctx.teacher.stages[-1].detach())

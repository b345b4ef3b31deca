"""Neuron Selectivity Transfer (Huang & Wang, 2017): MMD with a polynomial kernel between channel maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import full_precision, match_spatial, stage_pairs
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.models.base import Capability


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``k(x, y) = (xᵀy)²`` between every channel of ``a`` [B, Ca, N] and of ``b`` [B, Cb, N]: [B, Cb, Ca]."""
    return (b @ a.transpose(1, 2)).square()


def nst(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Per-sample squared MMD between the L2-normalized channel maps of two equal-size feature maps, [B]."""
    s = F.normalize(f_s.float().flatten(2), dim=2)
    t = F.normalize(f_t.float().flatten(2), dim=2)
    with full_precision(s):
        k_tt = _poly_kernel(t, t).flatten(1).mean(dim=1).detach()
        k_ss = _poly_kernel(s, s).flatten(1).mean(dim=1)
        k_st = _poly_kernel(s, t).flatten(1).mean(dim=1)
    return k_tt + k_ss - 2 * k_st


class NSTTerm(LossTerm):
    """Per image, Σ over paired stage outputs (the stem excluded) of the NST MMD.

    Larger maps are average-pooled to the smaller. Published (CRD benchmark, mdistiller): polynomial
    kernel of degree 2 with c = 0, weight 50, CE weight 1.
    """

    requires = frozenset({Capability.FEATURE_MAPS})

    def __init__(self, weight: float = 50.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        total = 0
        for f_s, f_t in stage_pairs(ctx.student.stages, ctx.teacher.stages):
            total = total + nst(*match_spatial(f_s, f_t.detach()))
        return total

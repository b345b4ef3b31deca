"""Attention Transfer (Zagoruyko & Komodakis, ICLR 2017): match normalized spatial attention maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive, match_spatial, per_sample_mean, stage_pairs
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.models.base import Capability


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """``normalize(mean_c |f|^p)`` flattened over positions: [B, C, H, W] -> [B, H·W].

    The absolute value makes odd and fractional ``p`` follow the formula (``f.pow(p)`` is negative or NaN
    for negative entries); the clamp at the smallest normal float keeps the gradient of ``|f|^p`` finite
    at zero for ``p < 1`` (a no-op for ``p >= 1``, where ``tiny^p`` vanishes).
    """
    magnitude = f.float().abs().clamp(min=torch.finfo(torch.float32).tiny)
    return F.normalize(magnitude.pow(p).mean(dim=1).flatten(1), dim=1)


class ATTerm(LossTerm):
    """Per image, Σ over paired stage outputs of mean_positions (a_s − a_t)².

    Stage outputs (the stem excluded) are paired in order; when spatial sizes differ the larger map is
    average-pooled to the smaller. Published (CRD benchmark, mdistiller): p = 2, weight 1000, CE weight 1.
    """

    requires = frozenset({Capability.FEATURE_MAPS})

    def __init__(self, p: float = 2.0, weight: float = 1000.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)
        self.p = check_positive(type(self).__name__, "p", p)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        total = 0
        for f_s, f_t in stage_pairs(ctx.student.stages, ctx.teacher.stages):
            f_s, f_t = match_spatial(f_s, f_t.detach())
            diff = attention_map(f_s, self.p) - attention_map(f_t, self.p)
            total = total + per_sample_mean(diff.square())
        return total

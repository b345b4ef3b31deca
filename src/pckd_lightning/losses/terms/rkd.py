"""Relational Knowledge Distillation (Park et al., CVPR 2019): distance- and angle-wise relations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive, full_precision
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.models.base import Capability


def pairwise_distances(e: torch.Tensor, squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances between rows, clamped at ``eps`` before the root, with a zero diagonal."""
    sq = e.square().sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def _normalized_distances(e: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    """Distances over their mean off the diagonal; a batch of one image has no pair, hence all zeros
    (``d[d > 0].mean()`` of no entry would be NaN)."""
    d = pairwise_distances(e, squared, eps)
    if len(e) < 2:
        return d
    # the mean of the positive entries (d >= 0), without indexing by a mask, which waits for the device
    return d / (d.sum() / (d > 0).sum())


def _angles(e: torch.Tensor) -> torch.Tensor:
    """``cos ∠(e_j − e_i, e_k − e_i)`` for every triple, flattened [B³]."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # [i, j] = unit(e_j − e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd(
    f_s: torch.Tensor,
    f_t: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    squared: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """``w_d · smoothL1(ψ_D) + w_a · smoothL1(ψ_A)`` over the batch (a scalar); no gradient to the teacher."""
    s, t = f_s.float().flatten(1), f_t.float().detach().flatten(1)
    with full_precision(s):
        loss_d = F.smooth_l1_loss(
            _normalized_distances(s, squared, eps), _normalized_distances(t, squared, eps)
        )
        loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
    return distance_weight * loss_d + angle_weight * loss_a


class RKDTerm(LossTerm):
    """RKD on the pooled features; one value per batch.

    Published (CRD benchmark, mdistiller): w_d = 25, w_a = 50, distances not squared, ε = 1e-12,
    weight 1, CE weight 1.
    """

    requires = frozenset({Capability.EMBEDDING})

    per_sample = False

    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        squared: bool = False,
        eps: float = 1e-12,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        self.distance_weight = check_positive(name, "distance_weight", distance_weight, allow_zero=True)
        self.angle_weight = check_positive(name, "angle_weight", angle_weight, allow_zero=True)
        self.squared = bool(squared)
        self.eps = check_positive(name, "eps", eps)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        weights = self.distance_weight, self.angle_weight
        return rkd(ctx.student.pooled, ctx.teacher.pooled, *weights, self.squared, self.eps)

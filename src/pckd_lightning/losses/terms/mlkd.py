"""MLKD, multi-level logit distillation (Jin et al., CVPR 2023): instance, batch and class alignment.

Every MLKD term reads both views of :class:`~pckd_lightning.data.transforms.WeakStrongViews` (view 0 weak,
view 1 strong) and sums over several temperatures ("prediction augmentation"). The teacher-confidence masks
come from the teacher's weak-view predictions. What the reference code (Jin-Ying/Multi-Level-Logit-Distillation
``KD_ours.forward_train``) computes, and so what its published numbers come from, is kept as it is:

* each masked loss is its *batch mean* times the mask's mean (``(loss * mask).mean()`` of a reduced loss), i.e.
  the fraction of samples (classes) at or below the median confidence, about 1/2, not a per-sample selection;
* the strong-view instance sum takes its first three temperatures on the strong view and the others on the
  weak view again;
* the batch and class alignments of the strong view are computed there but not added: only the weak view's are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.losses.terms.kd import check_flag
from pckd_lightning.schema.fields import Number, accepts

#: the reference's temperatures: its base temperature (KD.TEMPERATURE, 4) and 3, 5, 2, 6
TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)
#: how many of them the strong-view instance sum applies to the strong view
STRONG_TEMPERATURES = 3


def check_temperatures(term: str, temperatures: object) -> tuple[float, ...]:
    values = (
        tuple(temperatures)
        if isinstance(temperatures, Sequence) and not isinstance(temperatures, str)
        else ()
    )
    if not values or not all(accepts(Number(0, low_open=True), t) for t in values):
        raise ConfigError(
            f"{term}: temperatures must be a non-empty list of numbers > 0, got {temperatures!r}; "
            "e.g. distill.terms.<name>.temperatures=[4,3,5,2,6] (MLKD's)"
        )
    return tuple(float(t) for t in values)


def weak_and_strong(term: str, ctx: DistillContext) -> tuple[torch.Tensor, ...]:
    """Student weak, student strong, teacher weak, teacher strong logits, each [B, C]."""
    if ctx.num_views != 2:
        raise ConfigError(
            f"{term} needs MLKD's two views per image (weak, strong), got {ctx.num_views}; use distill=mlkd "
            "(views: 2, view_recipe: weak_strong) and leave data.views and data.view_recipe at their defaults"
        )
    s = ctx.student.logits.unflatten(0, (-1, 2))
    t = ctx.teacher.logits.unflatten(0, (-1, 2))
    return s[:, 0], s[:, 1], t[:, 0], t[:, 1]


class _MLKDTerm(LossTerm):
    views = "all"

    def __init__(
        self, temperatures: Sequence[float] = TEMPERATURES, weight: float = 1.0, preview: bool = False
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        self.temperatures = check_temperatures(type(self).__name__, temperatures)


class MLKDInstanceTerm(_MLKDTerm):
    """Instance level: Σ_T KD on both views, the weak view's times the sample mask's mean; per view-sample.

    Row 2i (view 0) holds twice image i's weak-view value and row 2i+1 twice its strong-view value, so the
    module's mean over the 2B rows is the reference's sum of the two batch means, and per-image (preview)
    weights weight both. ``standardize: true`` z-scores the logits first (LS; only this level, as in the
    LS code's MLKD).
    """

    def __init__(
        self,
        temperatures: Sequence[float] = TEMPERATURES,
        standardize: bool = False,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(temperatures, weight=weight, preview=preview)
        self.standardize = check_flag(type(self).__name__, "standardize", standardize)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        s_weak, s_strong, t_weak, t_strong = weak_and_strong(type(self).__name__, ctx)
        samples, _ = LF.confidence_masks(t_weak)

        def kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
            return LF.kd(s, t, temperature, standardize=self.standardize)

        weak = sum(kd(s_weak, t_weak, T) for T in self.temperatures) * samples.mean()
        strong = sum(
            kd(s_strong, t_strong, T) if k < STRONG_TEMPERATURES else kd(s_weak, t_weak, T)
            for k, T in enumerate(self.temperatures)
        )
        return 2 * torch.stack([weak, strong], dim=1).flatten()


class MLKDBatchTerm(_MLKDTerm):
    """Batch level: Σ_T ‖P_tP_tᵀ − P_sP_sᵀ‖² / B on the weak view, times the sample mask's mean (a scalar)."""

    per_sample = False

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        s_weak, _, t_weak, _ = weak_and_strong(type(self).__name__, ctx)
        samples, _ = LF.confidence_masks(t_weak)
        return sum(LF.batch_correlation(s_weak, t_weak, T) for T in self.temperatures) * samples.mean()


class MLKDClassTerm(_MLKDTerm):
    """Class level: Σ_T ‖P_tᵀP_t − P_sᵀP_s‖² / C on the weak view, times the class mask's mean (a scalar)."""

    per_sample = False

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        s_weak, _, t_weak, _ = weak_and_strong(type(self).__name__, ctx)
        _, classes = LF.confidence_masks(t_weak)
        return sum(LF.class_correlation(s_weak, t_weak, T) for T in self.temperatures) * classes.mean()


class AllViewsCrossEntropyTerm(LossTerm):
    """The student's cross-entropy on every view (MLKD's CE on the weak and the strong view), per view-sample.

    The module averages over all rows, i.e. (CE_weak + CE_strong) / 2: weight 2w is the reference's w · (sum).
    """

    views = "all"
    needs_teacher = False

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return ctx.cross_entropy

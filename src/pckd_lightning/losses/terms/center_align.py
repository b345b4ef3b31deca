"""PCKD's center alignment: pull the student's category centers onto the teacher's."""

from __future__ import annotations

import torch

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


class CenterAlignTerm(LossTerm):
    """MSE of ``[W|b]``; defined only when d_s == d_t, else skipped (as the released code does)."""

    requires = frozenset({Capability.CLASSIFIER})
    pair_condition = "the same embedding width, else the term is dropped (logged)"

    per_sample = False

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        if pair.student_dim != pair.teacher_dim:
            self.skip_reason = (
                f"center_align skipped: student feature dim {pair.student_dim} != teacher feature dim "
                f"{pair.teacher_dim}, so the category centers cannot be compared"
            )

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return LF.center_align(ctx.student_model.classifier_layer, ctx.teacher_model.classifier_layer)

"""PCKD's category contrast: student features contrasted against both models' category centers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.distributed import gather, gather_with_gradient, world_size
from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import full_precision
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


class CategoryContrastTerm(LossTerm):
    """Owns the projections E_s (d_s→d_s) and E_t (d_s→d_t); reads every view (spec §2.3).

    Under DDP with ``gather=True`` each rank contrasts its anchors against every rank's, so k
    processes compute the loss of one process on the k-times batch. The term runs in float32 under
    autocast, heads included: the contrast is a difference of large logits, the heads' products are
    tiny next to the networks', and casting their weights would cost more kernels than bf16 saves.
    """

    requires = frozenset({Capability.EMBEDDING, Capability.CLASSIFIER})

    views = "all"

    def __init__(
        self,
        temperature: float = 4.0,
        base_temperature: float = 0.07,
        gather: bool = True,
        weight: float = 0.05,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.gather = gather

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        self.embed_student = nn.Linear(pair.student_dim, pair.student_dim)
        self.embed_teacher = nn.Linear(pair.student_dim, pair.teacher_dim)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        h = ctx.student.pooled.float()
        with full_precision(h):
            e_s = F.normalize(self.embed_student(h), dim=1)
            e_t = F.normalize(self.embed_teacher(h), dim=1)
            sim_student = e_s @ ctx.student_model.classifier_layer.weight.T
            sim_teacher = e_t @ ctx.teacher_model.classifier_layer.weight.T
        contrast, offset = None, 0
        if self.gather and world_size() > 1:
            all_student, offset = gather_with_gradient(sim_student)
            all_teacher, _ = gather_with_gradient(sim_teacher)
            contrast = (all_student, all_teacher, gather(ctx.labels))
        return LF.category_contrast(
            sim_student,
            sim_teacher,
            ctx.labels,
            self.temperature,
            self.base_temperature,
            contrast=contrast,
            offset=offset,
        )

"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022): target-class and non-target-class KD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import EpochAwareTerm, check_positive


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Per-sample ``α·TCKD + β·NCKD``, shape [B] (no warm-up factor).

    TCKD = T²·KL(b_t ‖ b_s) over the binary split (p_target, 1 − p_target) of the softened softmax;
    NCKD = T²·KL(p̂_t ‖ p̂_s) over the softmax restricted to the non-target classes.
    """
    zs, zt = student_logits.float() / temperature, teacher_logits.float().detach() / temperature
    num_classes = zs.shape[1]
    target = F.one_hot(labels, num_classes).bool()

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:
        log_norm = torch.logsumexp(z, dim=1)
        log_target = z[target] - log_norm
        log_rest = torch.logsumexp(z.masked_fill(target, float("-inf")), dim=1) - log_norm
        return torch.stack([log_target, log_rest], dim=1)

    log_b_s, log_b_t = binary_log_probs(zs), binary_log_probs(zt)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(dim=1)

    # the C−1 non-target logits of each row, in class order
    log_q_s = F.log_softmax(zs[~target].view(-1, num_classes - 1), dim=1)
    log_q_t = F.log_softmax(zt[~target].view(-1, num_classes - 1), dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=1)
    return temperature**2 * (alpha * tckd + beta * nckd)


class DKDTerm(EpochAwareTerm):
    """DKD on view 0, per image, times the linear warm-up ``min(epoch / warmup_epochs, 1)``.

    Published CIFAR-100 settings (mdistiller): α = 1, β = 8 (2 for resnet56/110 teachers of resnet20/32,
    6 for the vgg13 and wrn_40_2 same-family pairs and vgg13 → MobileNetV2), T = 4, 20 warm-up epochs,
    CE weight 1. Needs the epoch: see :class:`EpochAwareTerm`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: int = 20,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(warmup_epochs=warmup_epochs, weight=weight, preview=preview)
        name = type(self).__name__
        self.alpha = check_positive(name, "alpha", alpha, allow_zero=True)
        self.beta = check_positive(name, "beta", beta, allow_zero=True)
        self.temperature = check_positive(name, "temperature", temperature)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        if ctx.student.logits.shape[1] < 2:
            raise ValueError("DKD needs at least two classes")
        s, t = ctx.student.logits, ctx.teacher.logits
        return self.warmup_factor() * dkd(s, t, ctx.labels, self.alpha, self.beta, self.temperature)

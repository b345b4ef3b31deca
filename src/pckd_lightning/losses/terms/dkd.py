"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022): target-class and non-target-class KD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive
from pckd_lightning.losses.terms.ctkd import (
    CurriculumTemperature,
)
from pckd_lightning.losses.terms.kd import TemperatureTerm


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | torch.Tensor = 4.0,
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """Per-sample ``α·TCKD + β·NCKD``, shape [B] (no warm-up factor).

    TCKD = T²·KL(b_t ‖ b_s) over the binary split (p_target, 1 − p_target) of the softened softmax;
    NCKD = T²·KL(p̂_t ‖ p̂_s) over the softmax restricted to the non-target classes.
    ``standardize=True`` z-scores both logit rows first (LS, see :func:`functional.standardize`).
    """
    zs, zt = student_logits.float(), teacher_logits.float().detach()
    if standardize:
        zs, zt = LF.standardize(zs), LF.standardize(zt)
    zs, zt = zs / temperature, zt / temperature
    # masks and gathers of a fixed shape: boolean indexing would wait for the device to size its result
    target = torch.zeros_like(zs, dtype=torch.bool).scatter_(1, labels[:, None], True)

    def log_probs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The binary split's log-probabilities [B, 2], and the log-softmax over the non-target classes."""
        log_norm = torch.logsumexp(z, dim=1, keepdim=True)
        non_target = z.masked_fill(target, float("-inf"))
        log_target = z.gather(1, labels[:, None]) - log_norm
        log_rest = torch.logsumexp(non_target, dim=1, keepdim=True) - log_norm
        return torch.cat([log_target, log_rest], dim=1), F.log_softmax(non_target, dim=1)

    (log_b_s, log_q_s), (log_b_t, log_q_t) = log_probs(zs), log_probs(zt)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(dim=1)
    # the target column is -inf in both: its term is 0 (not 0 · NaN)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s).masked_fill(target, 0.0)).sum(dim=1)
    return temperature**2 * (alpha * tckd + beta * nckd)


class DKDTerm(TemperatureTerm):
    """DKD on view 0, per image, times the linear warm-up ``min(epoch / warmup_epochs, 1)``.

    Published CIFAR-100 settings (mdistiller): α = 1, β = 8 (2 for resnet56/110 teachers of resnet20/32,
    6 for the vgg13 and wrn_40_2 same-family pairs and vgg13 → MobileNetV2), T = 4, 20 warm-up epochs,
    CE weight 1. The warm-up is :class:`LossTerm`'s (it needs the epoch). ``standardize`` and
    ``learned_temperature`` work as for :class:`KDTerm` (LS, CTKD).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: int = 20,
        weight: float = 1.0,
        preview: bool = False,
        standardize: bool = False,
        learned_temperature: CurriculumTemperature | None = None,
    ) -> None:
        super().__init__(warmup_epochs=warmup_epochs, weight=weight, preview=preview)
        name = type(self).__name__
        self.alpha = check_positive(name, "alpha", alpha, allow_zero=True)
        self.beta = check_positive(name, "beta", beta, allow_zero=True)
        self.set_temperature(temperature, standardize, learned_temperature)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        if ctx.student.logits.shape[1] < 2:
            raise ValueError("DKD needs at least two classes")
        s, t = ctx.student.logits, ctx.teacher.logits
        return dkd(
            s, t, ctx.labels, self.alpha, self.beta, self.current_temperature(), standardize=self.standardize
        )

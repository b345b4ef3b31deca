"""Distillation losses as plain functions, in the style of ``torch.nn.functional``.

Every function takes tensors (``center_align`` the two classifier layers) and keeps no state, computes
in float32 whatever the input dtype, and returns either a per-sample loss (so callers can weight samples,
e.g. by preview weights) or a scalar. In :mod:`pckd_lightning.losses.terms`, PCKD's terms (category
contrast, center and feature alignment), KD, DIST and MLKD are thin wrappers around these, and DKD and
CTKD use helpers from here (``standardize``, ``cosine_ramp``, ``reverse_gradient``); the other terms (CE,
DKD's decoupled loss, CRD, CC and the feature-based baselines) keep their formula in their own module.
Formulas follow the project spec (``../shared/docs/pckd-method.md``, outside the repository) §2–3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.errors import ConfigError

__all__ = [
    "batch_correlation",
    "category_contrast",
    "center_align",
    "class_correlation",
    "confidence_masks",
    "cosine_ramp",
    "difficulty_weights",
    "dist",
    "feature_align",
    "kd",
    "pearson",
    "preview_difficulty",
    "preview_threshold",
    "preview_weights",
    "reverse_gradient",
    "standardize",
]

#: what ``standardize`` adds to the standard deviation (the LS reference code's value)
STANDARDIZE_EPS = 1e-7


def standardize(logits: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Z-score of each row, ``(z − mean(z)) / (std(z) + eps)``, in float32 (logit standardization, LS).

    The standard deviation is the unbiased one (``torch.std``'s default), as in the LS code
    (sunshangquan/logit-standardization-KD ``normalize``). Teacher and student are standardized
    separately, so the student matches the teacher's logit *relations*, not their range.
    """
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + eps)


_standardize = standardize  # for the functions whose ``standardize`` switch shadows the name


def kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float | torch.Tensor = 4.0,
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """Hinton KD per sample: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``, shape [B].

    ``standardize=True`` z-scores both logit rows first (LS, Sun et al. CVPR 2024), making ``T`` a base
    temperature. ``temperature`` may be a 0-d tensor (CTKD's learned temperature).
    """
    zs, zt = student_logits.float(), teacher_logits.float()
    if standardize:
        zs, zt = _standardize(zs), _standardize(zt)
    log_p_s = F.log_softmax(zs / temperature, dim=1)
    log_p_t = F.log_softmax(zt / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl * temperature**2


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` ([N, D] -> [N]): the cosine of the centred rows.

    ``eps`` in the denominator keeps a constant row finite (correlation 0), as in the DIST code.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022), a scalar: ``T² · (β · inter + γ · intra)``.

    With ``p = softmax(z / T)`` ([B, C]): inter = 1 − mean over samples of the Pearson correlation of the
    student's and teacher's class distributions (rows); intra = 1 − mean over classes of the correlation
    of the class's probabilities across the batch (columns). Correlations ignore the scale and shift of
    the predictions, so the student need not match a much stronger teacher exactly. The intra-class part
    couples the samples of the batch: DIST is not a per-sample loss.
    """
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        p_s = F.softmax(student_logits.float() / temperature, dim=1)
        p_t = F.softmax(teacher_logits.float().detach() / temperature, dim=1)
        inter = 1 - pearson(p_s, p_t).mean()
        intra = 1 - pearson(p_s.T, p_t.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def class_correlation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MLKD's class-level alignment, a scalar: ``‖P_tᵀP_t − P_sᵀP_s‖²_F / C`` with ``P = softmax(z / T)`` [B, C]."""
    return _gram_gap(student_logits, teacher_logits, temperature, over_classes=True)


def batch_correlation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MLKD's batch-level alignment, a scalar: ``‖P_tP_tᵀ − P_sP_sᵀ‖²_F / B`` with ``P = softmax(z / T)`` [B, C]."""
    return _gram_gap(student_logits, teacher_logits, temperature, over_classes=False)


def _gram_gap(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, over_classes: bool
) -> torch.Tensor:
    """``‖G_t − G_s‖²_F / n`` of the Gram matrices of the softened probabilities, over images or classes."""
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        p_s = F.softmax(student_logits.float() / temperature, dim=1)
        p_t = F.softmax(teacher_logits.float().detach() / temperature, dim=1)
        if over_classes:
            p_s, p_t = p_s.T, p_t.T
        return (p_t @ p_t.T - p_s @ p_s.T).square().sum() / p_s.shape[0]


@torch.no_grad()
def confidence_masks(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MLKD's teacher-confidence masks (float 0/1): samples ``[B]`` and classes ``[C]`` at or below the median.

    A sample's confidence is the teacher's top probability (T = 1), a class's the sum of its probabilities
    over the batch; the median is the linearly interpolated 50th percentile, as ``numpy.percentile``.
    """
    p_t = F.softmax(teacher_logits.float(), dim=1)
    confidence = p_t.max(dim=1).values
    class_confidence = p_t.sum(dim=0)
    samples = (confidence <= torch.quantile(confidence, 0.5)).float()
    classes = (class_confidence <= torch.quantile(class_confidence, 0.5)).float()
    return samples, classes


def reverse_gradient(x: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """``x`` in the forward pass; ``−weight ·`` its gradient in the backward pass (a gradient reversal).

    Written as ``x̄ + weight · (x̄ − x)`` with ``x̄ = x.detach()``: exactly ``x`` in value (``x̄ − x`` is 0),
    with the derivative ``−weight``; plain tensor operations, so compiled code traces it like any other.
    CTKD's temperature uses it to *maximize* the distillation loss that the student minimizes.
    """
    frozen = x.detach()
    return frozen + weight * (frozen - x)


def cosine_ramp(epoch: int, start: float, end: float, epochs: int) -> float:
    """``start`` at epoch 0 to ``end`` at ``epochs`` along half a cosine, then ``end`` (CTKD's curriculum)."""
    progress = min(max(epoch, 0), epochs) / epochs if epochs > 0 else 1.0
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def category_contrast(
    sim_student: torch.Tensor,
    sim_teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    base_temperature: float = 0.07,
    *,
    contrast: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Supervised contrast over the similarity-to-centers anchors, per view-sample, shape [N].

    ``sim_student`` = W_s·normalize(E_s h^s) and ``sim_teacher`` = W_t·normalize(E_t h^s), both [N, C].
    The 2N anchors are contrasted with every other anchor; positives share the label. Returns
    ``ℓ_j(a^s) + ℓ_j(a^t)``. An anchor without positives (impossible when both anchors of a sample
    are present, since they share a label) contributes 0 rather than NaN.

    ``contrast = (all_sim_student, all_sim_teacher, all_labels)`` widens the set contrasted against
    (e.g. every rank's anchors, [M, C]), of which the N given anchors are rows ``offset:offset+N``.
    """
    if sim_student.shape != sim_teacher.shape or sim_student.shape[0] != labels.shape[0]:
        raise ValueError(
            f"category_contrast expects sim_student, sim_teacher of equal shape [N, C] and labels [N]; got "
            f"{tuple(sim_student.shape)}, {tuple(sim_teacher.shape)}, {tuple(labels.shape)}"
        )
    n = labels.shape[0]
    anchors = torch.cat([sim_student, sim_teacher]).float()
    anchor_labels = labels.repeat(2)
    if contrast is None:
        others, other_labels, m = anchors, anchor_labels, n
    else:
        all_student, all_teacher, all_labels = contrast
        others, other_labels, m = (
            torch.cat([all_student, all_teacher]).float(),
            all_labels.repeat(2),
            len(all_labels),
        )
    # autocast would run this product in bfloat16/float16: the loss is a difference of such logits
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        logits = anchors @ (others.T / temperature)
    # an anchor is not contrasted with itself: anchor k < n is column offset + k, anchor n + k is m + offset + k
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:n].diagonal(offset).fill_(True)
    self_mask[n:].diagonal(m + offset).fill_(True)
    # log of the denominator Σ_{m≠k} exp(s_km), computed stably (equivalent to subtracting the row max)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positives = (anchor_labels[:, None] == other_labels[None, :]).masked_fill_(self_mask, False)
    num_positives = positives.sum(dim=1)
    mean_log_prob = (log_prob * positives).sum(dim=1) / num_positives.clamp(min=1)
    per_anchor = mean_log_prob * -(temperature / base_temperature)
    return per_anchor.view(2, n).sum(dim=0)


def _fc_matrix(layer: nn.Linear) -> torch.Tensor:
    bias = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
    return torch.cat([layer.weight, bias[:, None]], dim=1)


def center_align(student_fc: nn.Linear, teacher_fc: nn.Linear) -> torch.Tensor:
    """MSE between the category centers ``[W_s | b_s]`` and ``[W_t | b_t]`` (a scalar)."""
    student, teacher = _fc_matrix(student_fc), _fc_matrix(teacher_fc)
    if student.shape != teacher.shape:
        raise ConfigError(
            f"center_align needs classifiers of equal shape, got student {tuple(student_fc.weight.shape)} and "
            f"teacher {tuple(teacher_fc.weight.shape)} (weight [classes, feature dim]); the term is only defined "
            "when d_s == d_t: remove it from distill.terms for this pair"
        )
    return F.mse_loss(student.float(), teacher.float().detach())


def feature_align(projected_student: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """``2 − 2 · mean cosine`` between projected student features and teacher features (a scalar)."""
    if projected_student.shape != teacher_features.shape:
        raise ValueError(
            f"feature_align expects equal shapes, got {tuple(projected_student.shape)} and "
            f"{tuple(teacher_features.shape)}"
        )
    u = F.normalize(projected_student.float(), dim=1)
    h = F.normalize(teacher_features.float(), dim=1)
    return 2 - 2 * (u * h).sum(dim=1).mean()


def preview_threshold(epoch: int, base: float = 1.005) -> float:
    """The easy/hard threshold ``t_e = base^e`` of epoch ``e`` (1-indexed)."""
    if epoch < 1:
        raise ValueError(f"preview epochs are 1-indexed, got epoch={epoch}")
    return base**epoch


@torch.no_grad()
def preview_difficulty(ce_per_image: torch.Tensor, batch_mean: torch.Tensor | None = None) -> torch.Tensor:
    """Difficulty ``γ_i = c_i / mean(c)``; ``batch_mean`` overrides the mean (e.g. a global-batch mean)."""
    ce = ce_per_image.detach().float()
    mean = ce.mean() if batch_mean is None else batch_mean.detach().float()
    return ce / mean.clamp(min=torch.finfo(torch.float32).tiny)


@torch.no_grad()
def preview_weights(
    ce_per_image: torch.Tensor, epoch: int, base: float = 1.005, batch_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """Preview weights ``v_i = 1`` if ``γ_i ≤ base^epoch`` else ``exp(−γ_i²)``; in (0, 1], no gradient."""
    gamma = preview_difficulty(ce_per_image, batch_mean)
    return difficulty_weights(gamma, preview_threshold(epoch, base))


@torch.no_grad()
def difficulty_weights(gamma: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1`` where ``γ ≤ threshold``, else ``exp(−γ²)``: :func:`preview_weights` from known difficulties.

    ``exp(−γ²)`` underflows float32 to 0 from γ ≈ 10 (e.g. one image holding most of the loss of a batch
    of 64, or a small global-batch mean); it is clamped at the smallest normal float so weights stay > 0.
    """
    hard = torch.exp(-gamma.square()).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.where(gamma <= threshold, 1.0, hard)

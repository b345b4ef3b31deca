"""FSP (Yim et al., CVPR 2017): match the flow of solution procedure, the Gram matrices between layers."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_input_size, full_precision, match_spatial, probe_shapes
from pckd_lightning.losses.terms.activation_boundary import student_feature_layers
from pckd_lightning.losses.terms.base import InitStageTerm, PairInfo
from pckd_lightning.models.base import Capability, ZooModel


def fsp_matrices(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each consecutive pair (a, b) of maps, G[n, j, i] = mean over positions of b[n, j] · a[n, i].

    When the two sides differ, the larger map is average-pooled to the smaller one's size first.
    Returns one [B, C_b, C_a] tensor per pair.
    """
    out = []
    for a, b in itertools.pairwise(maps):
        a, b = match_spatial(a.float(), b.float())
        with full_precision(a):  # the init stage runs under the run's autocast; keep the products float32
            out.append(torch.einsum("nihw,njhw->nji", a, b) / (a.shape[2] * a.shape[3]))
    return out


class FSPTerm(InitStageTerm):
    """FSP as an initialization stage only (CRD benchmark, ``--distill fsp``).

    Init stage: FSP matrices between every two consecutive feature maps (stem output, then each stage's
    output), for student and teacher; the loss is Σ_pairs mean_(batch, j, i) (G_s − G_t)². The student's
    feature layers (those its stage outputs depend on) are trained. The matrices only compare when both
    networks have the same channel count at every map, so the term refuses other pairs (the reference
    raises too; the CRD benchmark reports FSP for same-family pairs only).

    Main training: the term adds **nothing** (the reference sets ``loss_kd = 0`` after the init stage),
    so it has no ``weight`` option and returns 0 (logged as ``train/<name>`` = 0). Published:
    init_epochs 30, main loss CE alone (``-a 0 -b 50``; β is unused).
    """

    requires = frozenset({Capability.FEATURE_MAPS})
    pair_condition = "the same channel count at every map"

    per_sample = False

    def __init__(self, input_size: int = 32) -> None:
        super().__init__(weight=1.0)
        self.input_size = check_input_size(type(self).__name__, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s_channels = [c for c, _, _ in probe_shapes(pair.student, self.input_size).stages]
        t_channels = [c for c, _, _ in probe_shapes(pair.teacher, self.input_size).stages]
        if s_channels != t_channels:
            raise ConfigError(
                f"FSPTerm needs the same channel count at every feature map of both networks (stem, then "
                f"each stage), but the student has {s_channels} and the teacher {t_channels}. FSP is only "
                "defined for same-family pairs (e.g. resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2, "
                "vgg13 -> vgg8); choose another distill method for this pair"
            )
        if len(s_channels) < 2:
            raise ConfigError("FSPTerm needs at least two feature maps per network to form an FSP matrix")

    def init_loss(self, ctx: DistillContext) -> torch.Tensor:
        g_s = fsp_matrices(ctx.student.stages)
        g_t = fsp_matrices([f.detach() for f in ctx.teacher.stages])
        return sum((s - t).square().mean() for s, t in zip(g_s, g_t, strict=True))

    def init_modules(self, student: ZooModel) -> list[nn.Module]:
        return student_feature_layers(student, self.input_size)[0]

    def init_parameters(self, student: ZooModel) -> list[nn.Parameter]:
        return student_feature_layers(student, self.input_size)[1]

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        """No main-training loss: 0 (the transfer happened in the init stage)."""
        return ctx.student.logits.new_zeros((), dtype=torch.float32)

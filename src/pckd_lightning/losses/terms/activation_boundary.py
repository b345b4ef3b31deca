"""Activation Boundaries (Heo et al., AAAI 2019): teach the student where the teacher's neurons switch on.

Also home of :func:`student_feature_layers`, the student layers AB's and FSP's init stages train.
"""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_input_size, check_positive, probe_shapes, stage_pairs
from pckd_lightning.losses.terms.base import InitStageTerm, PairInfo
from pckd_lightning.losses.terms.fitnet import hint_regressor
from pckd_lightning.models.base import Capability, ZooModel
from pckd_lightning.modes import eval_mode


def student_feature_layers(student: nn.Module, input_size: int) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The student's layers that produce its stage outputs, and their parameters.

    This is the reference's ``model_s.get_feat_modules()`` found from the graph instead of by name: the
    parameters the stage outputs depend on (a backward pass from a probe image, in eval mode, so no
    BatchNorm statistic moves), and the modules that own them. The classifier and whatever sits between
    the last stage and the pooling (MobileNetV2's and ShuffleNetV2's last 1x1 conv, WRN's final BN) are
    left out, so the init stage neither updates nor puts them in train mode.
    """
    params = [p for p in student.parameters() if p.requires_grad]
    with eval_mode(student), torch.enable_grad():
        probe = torch.zeros(1, 3, input_size, input_size, device=params[0].device, dtype=params[0].dtype)
        stages = student(probe, with_features=True).stages
        grads = torch.autograd.grad(sum(s.sum() for s in stages), params, allow_unused=True)
    reached = {id(p) for p, g in zip(params, grads, strict=True) if g is not None}
    layers = [m for m in student.modules() if any(id(p) in reached for p in m.parameters(recurse=False))]
    return layers, [p for p in params if id(p) in reached]


def ab_criterion(source: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Per sample, Σ over (C, H, W) of the alternative L2 loss of AB: [B, C, H, W] x2 -> [B].

    Where the teacher is off (``target <= 0``) the student is pushed below ``-margin``; where it is on,
    above ``+margin``; a student already past the margin on the right side costs nothing.
    """
    source, on = source.float(), target > 0
    below = (source + margin).square() * ((source > -margin) & ~on)
    above = (source - margin).square() * ((source <= margin) & on)
    return (below + above).flatten(1).sum(dim=1)


class ABTerm(InitStageTerm):
    """Activation-boundary transfer, as an initialization stage only (CRD benchmark, ``--distill abound``).

    Init stage: every student stage output after the stem goes through a connector onto the paired
    teacher map (identity when channels and side match, else the FitNets regressor's conv + BN without
    ReLU) and the loss is Σ_i w_i · 3/1000 · mean_batch Σ_(c,h,w) ab(connector_i(s_i), t_i) with
    w_i = 2^(i - n + 1) (the deepest pair weighs 1, each earlier one half the next). The student's
    feature layers (those its stage outputs depend on, see :func:`student_feature_layers`) and the
    connectors are trained.

    Main training: the term adds **nothing** (the reference sets ``loss_kd = 0`` after the init stage),
    so it has no ``weight`` option, returns 0 (logged as ``train/<name>`` = 0) and its connectors are
    frozen. Published: init_epochs 30, margin 1, main loss CE alone (``-a 0 -b 1``; β is unused).

    Deviation: the reference reads both networks' pre-ReLU maps (``preact=True``); the zoo exposes the
    stage outputs after the ReLU for ResNet, VGG and ShuffleNet (WRN and MobileNetV2 expose raw maps).
    The teacher's on/off pattern is the same either way (``relu(x) > 0`` iff ``x > 0``), but a student
    map after its ReLU cannot go below 0, so a connector that is the identity leaves a floor of margin²
    per off-neuron and passes no gradient to a neuron that is off but should be on.
    """

    requires = frozenset({Capability.FEATURE_MAPS})
    pair_condition = "each paired student map not smaller than the teacher's unless exactly half"

    per_sample = False

    def __init__(self, margin: float = 1.0, input_size: int = 32) -> None:
        super().__init__(weight=1.0)
        self.margin = check_positive(type(self).__name__, "margin", margin)
        self.input_size = check_input_size(type(self).__name__, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s_shapes = probe_shapes(pair.student, self.input_size).stages
        t_shapes = probe_shapes(pair.teacher, self.input_size).stages
        connectors = []
        for index, (s, t) in enumerate(stage_pairs(s_shapes, t_shapes), start=1):
            if s[:2] == t[:2]:
                connectors.append(nn.Identity())
                continue
            regressor = hint_regressor(s, t)
            if regressor is None:
                raise ConfigError(
                    f"ABTerm: the student's stage {index} map ({s[0]}x{s[1]}x{s[2]}) is smaller than the "
                    f"teacher's ({t[0]}x{t[1]}x{t[2]}) and not half of it; no connector can map it, so AB "
                    "cannot be used for this pair"
                )
            connectors.append(nn.Sequential(*list(regressor)[:2]))  # conv + BN, no ReLU
        if not connectors:
            raise ConfigError("ABTerm: the student or the teacher has no stage after the stem to transfer")
        self.connectors = nn.ModuleList(connectors).requires_grad_(False)

    @property
    def layer_weights(self) -> list[float]:
        """2^(i - n + 1) for the n paired stages: 1 for the deepest, halving towards the stem."""
        n = len(self.connectors)
        return [2.0 ** (i - n + 1) for i in range(n)]

    def init_loss(self, ctx: DistillContext) -> torch.Tensor:
        pairs = stage_pairs(ctx.student.stages, ctx.teacher.stages)
        total = 0
        for connector, w, (f_s, f_t) in zip(self.connectors, self.layer_weights, pairs, strict=True):
            per_sample = ab_criterion(connector(f_s), f_t.detach(), self.margin)
            total = total + w * 3e-3 * per_sample.mean()
        return total

    def init_modules(self, student: ZooModel) -> list[nn.Module]:
        return [*student_feature_layers(student, self.input_size)[0], self.connectors]

    def init_parameters(self, student: ZooModel) -> list[nn.Parameter]:
        return [*student_feature_layers(student, self.input_size)[1], *self.connectors.parameters()]

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        """No main-training loss: 0 (the transfer happened in the init stage)."""
        return ctx.student.logits.new_zeros((), dtype=torch.float32)

"""FitNets (Romero et al., ICLR 2015): regress the teacher's hint feature map from the student's."""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_count, check_input_size, per_sample_mean, probe_shapes
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability


def hint_regressor(student: tuple[int, int, int], teacher: tuple[int, int, int]) -> nn.Module | None:
    """Conv → BN → ReLU mapping a (C, H, W) student map onto the teacher's (C, H, W), or None if impossible.

    The convolution follows the CRD benchmark: stride-2 3x3 when the student map is twice as large,
    a stride-2 transposed 4x4 when it is half as large, otherwise a valid convolution whose kernel
    absorbs the size difference (1x1 for equal sizes).
    """
    (cs, hs, ws), (ct, ht, wt) = student, teacher
    if hs == 2 * ht and ws == 2 * wt:
        conv = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
    elif 2 * hs == ht and 2 * ws == wt:
        conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
    elif hs >= ht and ws >= wt:
        conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
    else:
        return None
    return nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU(inplace=True))


class FitNetTerm(LossTerm):
    """Per-image MSE between ``regressor(student.stages[hint_layer])`` and ``teacher.stages[hint_layer]``.

    ``hint_layer`` indexes the stage list (0 = stem, then each stage's output), as ``--hint_layer``
    indexes the feature list in the CRD benchmark (default 2). Single-stage training, as in that
    benchmark (no separate hint pre-training). Published: weight 100, CE weight 1.
    """

    requires = frozenset({Capability.FEATURE_MAPS})
    pair_condition = (
        "map hint_layer in both, the student's not smaller than the teacher's unless exactly half"
    )

    def __init__(
        self, hint_layer: int = 2, input_size: int = 32, weight: float = 100.0, preview: bool = False
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        self.hint_layer = check_count(type(self).__name__, "hint_layer", hint_layer)
        self.input_size = check_input_size(type(self).__name__, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s_shapes = probe_shapes(pair.student, self.input_size).stages
        t_shapes = probe_shapes(pair.teacher, self.input_size).stages
        valid = list(range(min(len(s_shapes), len(t_shapes))))
        if self.hint_layer not in valid:
            raise ConfigError(
                f"FitNetTerm: hint_layer={self.hint_layer} does not exist for this pair "
                f"({len(s_shapes)} student and {len(t_shapes)} teacher feature maps); valid values: "
                f"{', '.join(map(str, valid))} (distill.terms.<name>.hint_layer)"
            )
        s, t = s_shapes[self.hint_layer], t_shapes[self.hint_layer]
        regressor = hint_regressor(s, t)
        if regressor is None:
            raise ConfigError(
                f"FitNetTerm: hint_layer={self.hint_layer} gives a student map {s[1]}x{s[2]} smaller than "
                f"the teacher's {t[1]}x{t[2]} (and not half of it), which the regressor cannot upsample; "
                "choose another distill.terms.<name>.hint_layer"
            )
        self.regressor = regressor

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        f_s = self.regressor(ctx.student.stages[self.hint_layer])
        f_t = ctx.teacher.stages[self.hint_layer].detach()
        return per_sample_mean((f_s.float() - f_t.float()).square())

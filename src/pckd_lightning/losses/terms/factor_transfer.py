"""Factor Transfer (Kim et al., NeurIPS 2018): the student's translated factor imitates the teacher's.

The teacher's last feature map is compressed by a paraphraser (an auto-encoder trained first, in the
initialization stage); the student's last map goes through a translator trained with the student.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import (
    check_count,
    check_input_size,
    check_positive,
    match_spatial,
    probe_shapes,
)
from pckd_lightning.losses.terms.base import InitStageTerm, PairInfo
from pckd_lightning.models.base import Capability, ZooModel

DISTANCES = ("l1", "l2")


def conv_stack(channels: list[int], transpose: bool = False, batch_norm: bool = False) -> nn.Sequential:
    """3x3 stride-1 convolutions (transposed if asked) through ``channels``, each followed by an optional
    BatchNorm and LeakyReLU(0.1); the spatial size is kept."""
    layers: list[nn.Module] = []
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    for c_in, c_out in itertools.pairwise(channels):
        layers.append(conv(c_in, c_out, kernel_size=3, stride=1, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Auto-encoder of the teacher's map: C -> C -> k -> k (the factor), then back k -> k -> C -> C."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = conv_stack([c, c, k, k])
        self.decoder = conv_stack([k, k, c, c], transpose=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The factor and the reconstruction of ``x``."""
        factor = self.encoder(x)
        return factor, self.decoder(factor)


def translator(student_channels: int, factor_channels: int) -> nn.Sequential:
    """The student's side: C_s -> C_s -> k -> k with BatchNorm (the paraphraser has none)."""
    c, k = student_channels, factor_channels
    return conv_stack([c, c, k, k], batch_norm=True)


def factor_map(factor: torch.Tensor, p: int) -> torch.Tensor:
    """``normalize(mean_c factor^p)`` flattened over positions: [B, k, H, W] -> [B, H·W]."""
    return F.normalize(factor.float().pow(p).mean(dim=1).flatten(1), dim=1)


class FactorTransferTerm(InitStageTerm):
    """FT as in the CRD benchmark (``--distill factor``), on the last stage output of both networks.

    Init stage: the paraphraser (no BatchNorm, k = int(rate · C_t) factor channels) is trained alone to
    reconstruct the teacher's map, loss mean (decoder(encoder(t)) − t)²; the student is untouched.

    Main training: per image, mean over positions of |φ(translator(s)) − φ(encoder(t))| (``distance:
    l1``; squared for ``l2``) with φ(f) = normalize(mean_channels f^p) and the larger map average-pooled
    to the smaller's side. The translator is trained with the student; the paraphraser stays frozen.
    Published: init_epochs 30, rate 0.5, p 2, L1, weight 200, CE weight 1 (``-a 0 -b 200``).
    """

    requires = frozenset({Capability.FEATURE_MAPS})

    def __init__(
        self,
        rate: float = 0.5,
        p: int = 2,
        distance: str = "l1",
        input_size: int = 32,
        weight: float = 200.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        self.rate = check_positive(name, "rate", rate)
        self.p = check_count(name, "p", p, minimum=1)
        if distance not in DISTANCES:
            raise ConfigError(f"{name}: distance must be one of {list(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.input_size = check_input_size(name, input_size)

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        s = probe_shapes(pair.student, self.input_size).stages[-1]
        t = probe_shapes(pair.teacher, self.input_size).stages[-1]
        factor_channels = int(t[0] * self.rate)
        if factor_channels < 1:
            raise ConfigError(
                f"FactorTransferTerm: rate={self.rate} leaves int({t[0]} · rate) = 0 factor channels for the "
                f"teacher's {t[0]}-channel map; set distill.terms.<name>.rate >= {1 / t[0]:.3g} (published 0.5)"
            )
        self.paraphraser = Paraphraser(t[0], factor_channels).requires_grad_(False)
        self.translator = translator(s[0], factor_channels)

    def init_loss(self, ctx: DistillContext) -> torch.Tensor:
        f_t = ctx.teacher.stages[-1].detach()
        _, reconstruction = self.paraphraser(f_t)
        return F.mse_loss(reconstruction.float(), f_t.float())

    def init_modules(self, student: ZooModel) -> list[nn.Module]:
        return [self.paraphraser]

    def init_parameters(self, student: ZooModel) -> list[nn.Parameter]:
        return list(self.paraphraser.parameters())

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        factor_s = self.translator(ctx.student.stages[-1])
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(ctx.teacher.stages[-1])
        factor_s, factor_t = match_spatial(factor_s, factor_t)
        diff = factor_map(factor_s, self.p) - factor_map(factor_t, self.p)
        per_position = diff.abs() if self.distance == "l1" else diff.square()
        return per_position.mean(dim=1)

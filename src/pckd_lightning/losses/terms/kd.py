"""Hinton's logit distillation, optionally with standardized logits (LS) or a learned temperature (CTKD)."""

from __future__ import annotations

import torch

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_positive
from pckd_lightning.losses.terms.base import LossTerm
from pckd_lightning.losses.terms.ctkd import (
    CurriculumTemperature,
    check_learned_temperature,
    current_temperature,
    pass_epoch,
)


def check_flag(term: str, option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{term}: {option} must be true or false, got {value!r}")
    return value


class KDTerm(LossTerm):
    """``T² · KL(teacher ‖ student)`` per image, on view 0.

    ``standardize: true`` z-scores each image's logits, teacher and student separately, before the
    softmax (LS, Sun et al. CVPR 2024); ``temperature`` is then a base temperature. A
    :class:`CurriculumTemperature` as ``learned_temperature`` replaces the fixed one (CTKD, Li et al. AAAI 2023).
    """

    def __init__(
        self,
        temperature: float = 4.0,
        standardize: bool = False,
        learned_temperature: CurriculumTemperature | None = None,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        self.temperature = check_positive(name, "temperature", temperature)
        self.standardize = check_flag(name, "standardize", standardize)
        self.learned_temperature = check_learned_temperature(name, learned_temperature)

    def on_train_epoch_start(self, epoch: int) -> None:
        super().on_train_epoch_start(epoch)
        pass_epoch(self.learned_temperature, epoch)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        temperature = current_temperature(self.temperature, self.learned_temperature)
        return LF.kd(ctx.student.logits, ctx.teacher.logits, temperature, standardize=self.standardize)

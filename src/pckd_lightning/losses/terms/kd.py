"""Hinton's logit distillation, optionally with standardized logits (LS) or a learned temperature (CTKD)."""

from __future__ import annotations

import torch

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
from pckd_lightning.schema.fields import Bool, require


def check_flag(term: str, option: str, value: object) -> bool:
    return require(Bool, value, term, option)


class TemperatureTerm(LossTerm):
    """A logit term of the KD family: a softmax temperature, fixed or learned (``learned_temperature``: CTKD's
    :class:`CurriculumTemperature`, Li et al. AAAI 2023), on logits z-scored per image when ``standardize``
    (LS, Sun et al. CVPR 2024; ``temperature`` is then a base temperature)."""

    def set_temperature(
        self, temperature: float, standardize: bool, learned_temperature: CurriculumTemperature | None
    ) -> None:
        """Check and keep the three options (called by the subclass's ``__init__``)."""
        name = type(self).__name__
        self.temperature = check_positive(name, "temperature", temperature)
        self.standardize = check_flag(name, "standardize", standardize)
        self.learned_temperature = check_learned_temperature(name, learned_temperature)

    def current_temperature(self) -> float | torch.Tensor:
        """The learned temperature when there is one (a tensor, in the graph), else the fixed one."""
        return current_temperature(self.temperature, self.learned_temperature)

    def on_train_epoch_start(self, epoch: int) -> None:
        super().on_train_epoch_start(epoch)
        pass_epoch(self.learned_temperature, epoch)  # CTKD's curriculum on the gradient reversal


class KDTerm(TemperatureTerm):
    """``T² · KL(teacher ‖ student)`` per image, on view 0, with the options of :class:`TemperatureTerm`."""

    def __init__(
        self,
        temperature: float = 4.0,
        standardize: bool = False,
        learned_temperature: CurriculumTemperature | None = None,
        weight: float = 1.0,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        self.set_temperature(temperature, standardize, learned_temperature)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        return LF.kd(
            ctx.student.logits, ctx.teacher.logits, self.current_temperature(), standardize=self.standardize
        )

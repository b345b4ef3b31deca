"""CTKD's curriculum temperature (Li et al., AAAI 2023): a learned temperature that fights the student."""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.terms._common import check_count, check_positive
from pckd_lightning.schema.fields import Number, require


class CurriculumTemperature(nn.Module):
    """``T = min_temperature + temperature_range · sigmoid(θ)`` with one learned θ (CTKD's global temperature).

    θ reaches the optimizer through a gradient reversal: it *raises* the distillation loss the student
    lowers, so the temperature keeps the task hard. The reversal weight λ follows a cosine curriculum
    from ``reversal_start`` (epoch 0) to ``reversal_end`` (epoch ``reversal_epochs`` and later), so the
    task gets harder as the student gets stronger. Given as the ``learned_temperature`` of a KD or DKD
    term (which then ignores its fixed ``temperature``, as CTKD's script ignores ``--kd_T``) and told the
    epoch by it; λ is a tensor, so a compiled term does not recompile when it changes.
    Before the first epoch hook λ is ``reversal_start``.
    """

    def __init__(
        self,
        min_temperature: float = 1.0,
        temperature_range: float = 20.0,
        init: float = 1.0,
        reversal_start: float = 0.0,
        reversal_end: float = 1.0,
        reversal_epochs: int = 10,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.min_temperature = check_positive(name, "min_temperature", min_temperature)
        self.temperature_range = check_positive(name, "temperature_range", temperature_range)
        self.reversal_start = check_positive(name, "reversal_start", reversal_start, allow_zero=True)
        self.reversal_end = check_positive(name, "reversal_end", reversal_end, allow_zero=True)
        self.reversal_epochs = check_count(name, "reversal_epochs", reversal_epochs)
        require(Number(), init, name, "init (the raw θ before the sigmoid)")
        self.theta = nn.Parameter(torch.tensor(float(init)))
        # recomputed at every epoch start, hence not saved
        self.register_buffer("reversal", torch.tensor(self.reversal_start), persistent=False)

    def reversal_weight(self, epoch: int) -> float:
        """λ of a (1-indexed) epoch."""
        return LF.cosine_ramp(epoch, self.reversal_start, self.reversal_end, self.reversal_epochs)

    def on_train_epoch_start(self, epoch: int) -> None:
        self.reversal.fill_(self.reversal_weight(epoch))

    def forward(self) -> torch.Tensor:
        """The temperature, a 0-d float32 tensor."""
        theta = LF.reverse_gradient(self.theta.float(), self.reversal)
        return self.min_temperature + self.temperature_range * torch.sigmoid(theta)


def check_learned_temperature(term: str, value: object) -> CurriculumTemperature | None:
    """``learned_temperature`` of a KD-family term: null, or a :class:`CurriculumTemperature` (CTKD)."""
    if value is not None and not isinstance(value, CurriculumTemperature):
        raise ConfigError(
            f"{term}: learned_temperature must be null or a CurriculumTemperature, got {value!r}; set "
            "distill.terms.<name>.learned_temperature._target_=pckd_lightning.losses.CurriculumTemperature"
        )
    return value


def current_temperature(fixed: float, learned: CurriculumTemperature | None) -> float | torch.Tensor:
    """The value to divide the logits by: the learned temperature now if there is one, else ``fixed``."""
    return fixed if learned is None else learned()


def pass_epoch(learned: CurriculumTemperature | None, epoch: int) -> None:
    """Tell a learned temperature the epoch (its reversal curriculum); a fixed one needs nothing."""
    if learned is not None:
        learned.on_train_epoch_start(epoch)

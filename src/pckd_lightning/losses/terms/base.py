"""The loss-term interface: one small module per term, added or removed by config alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.models.base import ZooModel


@dataclass(frozen=True)
class PairInfo:
    """Shapes of the teacher/student pair, so terms can size their heads when the module is built."""

    student: ZooModel
    teacher: ZooModel | None
    num_classes: int
    #: labels of the training set in dataset-index order (for terms with per-sample memory, e.g. CRD)
    train_labels: torch.Tensor | None = None

    @property
    def student_dim(self) -> int:
        return self.student.feature_dim

    @property
    def teacher_dim(self) -> int:
        if self.teacher is None:
            raise ConfigError("this loss term needs a teacher; set model.teacher or remove the term")
        return self.teacher.feature_dim


class LossTerm(nn.Module):
    """One named part of the distillation loss.

    Subclasses declare which samples they read (``views``: ``"first"`` = view 0 of each image,
    ``"all"`` = every view), whether :meth:`forward` returns a per-sample loss (``per_sample``, which
    is what lets a term take per-sample weights such as the preview weights) and whether they need a
    teacher. Trainable heads are created in :meth:`build`, which the DistillationModule calls once it
    knows the pair, so they are registered in the module: optimized, synchronized and checkpointed.
    """

    views: ClassVar[Literal["first", "all"]] = "first"
    per_sample: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = True

    def __init__(self, weight: float = 1.0, preview: bool = False) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"{type(self).__name__}: weight must be a finite number >= 0, got {weight!r}; "
                "set distill.terms.<name>.weight to a value such as 1.0"
            )
        if preview and not self.per_sample:
            raise ConfigError(
                f"{type(self).__name__} returns one value per batch, so it cannot take preview weights; "
                "set preview: false for it"
            )
        self.weight = float(weight)
        self.preview = bool(preview)
        #: why the term is switched off for this pair (None while it is active)
        self.skip_reason: str | None = None

    def build(self, pair: PairInfo) -> None:
        """Create heads sized for the pair, or set :attr:`skip_reason`; the default needs nothing."""
        if self.needs_teacher and pair.teacher is None:
            raise ConfigError(
                f"loss term {type(self).__name__} needs a teacher, but model.teacher is null; "
                "set model.teacher or remove the term from distill.terms"
            )

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called with the 1-indexed epoch before it starts (for schedules such as warm-ups)."""

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        raise NotImplementedError

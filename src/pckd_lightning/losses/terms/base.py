"""The loss-term interface: one small module per term, added or removed by config alone."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.models.base import Capability, ZooModel
from pckd_lightning.schema.fields import Int, accepts, require


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


def check_warmup_epochs(term: str, value: object) -> int:
    return require(
        Int(0),
        value,
        term,
        "warmup_epochs",
        note=" (0: no warm-up; n: the weight ramps linearly from 1/n in epoch 1 to 1 from epoch n)",
        fix="; set distill.terms.<name>.warmup_epochs",
    )


def _with_warmup_option(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` plus a keyword-only ``warmup_epochs``, also in its signature (the runner checks options by it)."""

    @functools.wraps(init)
    def __init__(self: LossTerm, *args: Any, warmup_epochs: int = 0, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.warmup_epochs = check_warmup_epochs(type(self).__name__, warmup_epochs)

    signature = inspect.signature(init)
    params = list(signature.parameters.values())
    option = inspect.Parameter("warmup_epochs", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=int)
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    __init__.__signature__ = signature.replace(parameters=[*params[:at], option, *params[at:]])
    return __init__


class LossTerm(nn.Module):
    """One named part of the distillation loss.

    Subclasses declare which samples they read (``views``: ``"first"`` = view 0 of each image,
    ``"all"`` = every view), whether :meth:`forward` returns a per-sample loss (``per_sample``, which
    is what lets a term take per-sample weights such as the preview weights) and whether they need a
    teacher. Trainable heads are created in :meth:`build`, which the DistillationModule calls once it
    knows the pair, so they are registered in the module: optimized, synchronized and checkpointed.

    Every term takes ``warmup_epochs``: the step multiplies the term's value by ``weight`` times
    ``min(epoch / warmup_epochs, 1)`` (a linear ramp of its weight, as DKD's published warm-up); calling
    the term gives its value alone, so logs and measurements read one scale. A subclass whose
    ``__init__`` does not name the option gets it added, so no term has to repeat it. The factor is a
    buffer, not a Python number: a compiled step would recompile for every new value.
    """

    views: ClassVar[Literal["first", "all"]] = "first"
    per_sample: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = True
    #: what the term reads of each model (of the teacher too when it needs one); :meth:`build` refuses a pair
    #: that does not give it, before any work
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.LOGITS})
    #: what the pair must satisfy beyond :attr:`requires`, which the term's own :meth:`build` checks (for the
    #: README's table of which methods need what); None when nothing more
    pair_condition: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and "warmup_epochs" not in inspect.signature(init).parameters:
            cls.__init__ = _with_warmup_option(init)

    def __init__(self, weight: float = 1.0, preview: bool = False, warmup_epochs: int = 0) -> None:
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
        self.warmup_epochs = check_warmup_epochs(type(self).__name__, warmup_epochs)
        #: the current 1-indexed training epoch, set by :meth:`on_train_epoch_start`
        self.epoch: int | None = None
        # the step reads a tensor and a flag, never the epoch: torch.compile specializes on int attributes
        self.register_buffer("_warmup", torch.ones(()), persistent=False)
        self._epoch_known = False

    def build(self, pair: PairInfo) -> None:
        """Create heads sized for the pair, or set :attr:`skip_reason`; the base checks :attr:`requires`.

        A subclass that overrides it calls ``super().build(pair)`` first.
        """
        if self.needs_teacher and pair.teacher is None:
            raise ConfigError(
                f"loss term {type(self).__name__} needs a teacher, but model.teacher is null; "
                "set model.teacher or remove the term from distill.terms"
            )
        models = {"student": pair.student, "teacher": pair.teacher if self.needs_teacher else None}
        for role, model in models.items():
            # a model that does not say what it gives follows the zoo's contract: everything
            gives = getattr(model, "capabilities", frozenset(Capability))
            missing = [c for c in Capability if c in self.requires and model is not None and c not in gives]
            if missing:
                raise ConfigError(
                    f"loss term {type(self).__name__} needs the {role}'s {missing[0].value} (it reads "
                    f"{', '.join(c.value for c in Capability if c in self.requires)}), but "
                    f"{model.lacks(missing[0]).replace('<role>', role)}; or choose a method that needs less "
                    '(README, "Any model": which methods need what)'
                )

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called with the 1-indexed epoch (``trainer.current_epoch + 1``) before it starts; sets the warm-up.

        A subclass that overrides it calls ``super().on_train_epoch_start(epoch)``.
        """
        if not accepts(Int(1), epoch):
            raise ValueError(f"{type(self).__name__}: epochs are 1-indexed ints, got {epoch!r}")
        self.epoch, self._epoch_known = epoch, True
        self._warmup.fill_(min(epoch / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0)

    def warmup_factor(self) -> torch.Tensor:
        """``min(epoch / warmup_epochs, 1)``: 1/warmup_epochs in epoch 1, 1 from epoch ``warmup_epochs``."""
        if self.warmup_epochs and not self._epoch_known:
            raise RuntimeError(
                f"{type(self).__name__} has a {self.warmup_epochs}-epoch warm-up but was never told the "
                "epoch: the DistillationModule must call term.on_train_epoch_start(self.current_epoch + 1) "
                "at the start of each training epoch (or set warmup_epochs: 0)"
            )
        return self._warmup

    def weighted(self, value: torch.Tensor) -> torch.Tensor:
        """The term's share of the total loss: ``weight · warm-up factor · value`` (no operation for a unit)."""
        if self.warmup_epochs:
            value = value * self.warmup_factor()
        return value if self.weight == 1 else self.weight * value

    @property
    def effective_weight(self) -> float:
        """``weight ·`` this epoch's warm-up factor: what the term's value is multiplied by in the total."""
        return self.weight * (float(self.warmup_factor()) if self.warmup_epochs else 1.0)

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        raise NotImplementedError


class InitStageTerm(LossTerm):
    """A loss term with an initialization stage, run by the ``InitStage`` callback before main training.

    The callback finds such terms by their :meth:`init_loss` and, for ``init_epochs`` epochs over the
    training set, minimizes the sum of their init losses over :meth:`init_parameters` only, with
    :meth:`init_modules` in train mode and everything else in eval mode. :meth:`forward` is the term's
    contribution to the main training that follows.

    Heads that the main training must not update (FT's paraphraser, AB's connectors) are created with
    ``requires_grad=False``, so the DistillationModule's optimizer leaves them out; the callback switches
    them on for the init stage only. The buffer ``initialized`` (saved in checkpoints, so a resumed run
    keeps it) records that the stage ran: main training refuses to start without it.
    """

    def __init__(self, weight: float = 1.0, preview: bool = False) -> None:
        super().__init__(weight=weight, preview=preview)
        self.register_buffer("initialized", torch.tensor(False))

    def init_loss(self, ctx: DistillContext) -> torch.Tensor:
        """The scalar the initialization stage minimizes (``ctx`` holds the samples :attr:`views` names)."""
        raise NotImplementedError

    def init_modules(self, student: ZooModel) -> list[nn.Module]:
        """The modules trained in the init stage (the student's or the term's): put in train mode for it
        (all others in eval mode)."""
        raise NotImplementedError

    def init_parameters(self, student: ZooModel) -> list[nn.Parameter]:
        """The parameters the init stage optimizes (the student's or the term's; never the teacher's)."""
        raise NotImplementedError

    def mark_initialized(self) -> None:
        self.initialized.fill_(True)

    def on_train_epoch_start(self, epoch: int) -> None:
        super().on_train_epoch_start(epoch)
        if not bool(self.initialized):
            raise ConfigError(
                f"{type(self).__name__} has an initialization stage that never ran, so main training would "
                "start from untrained heads. Add the pckd_lightning.callbacks.InitStage callback (conf/distill/"
                "{ab,fsp,ft}.yaml declare it under distill.callbacks.init_stage), or, to skip the stage on "
                "purpose, set its init_epochs: 0"
            )

"""The LightningModule of pckd-lightning: a frozen teacher, a trainable student and named loss terms."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import HalfPrecision, MixedPrecision
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from pckd_lightning.callbacks.final_validation import ValidateFinalEpoch
from pckd_lightning.distillation.checkpoint_io import WORLD_SIZE_KEY
from pckd_lightning.distillation.loss_meter import LossMeter
from pckd_lightning.distillation.options import Performance, TeacherOptions
from pckd_lightning.distillation.step import DistillStep
from pckd_lightning.distillation.teacher import cast_convolutions, freeze
from pckd_lightning.distillation.teacher_cache import TeacherCache
from pckd_lightning.distributed import convert_batchnorm, world_size
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.losses.terms import LossTerm, PairInfo
from pckd_lightning.models import ZooModel
from pckd_lightning.preview import PreviewWeights, callbacks_for

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: turns the configured optimizer into the one a method trains with (DOT's two-momentum SGD)
OptimizerWrapper = Callable[[torch.optim.Optimizer], torch.optim.Optimizer]
#: is handed each training step's per-term losses, with their graph, before the backward
LossListener = Callable[[Mapping[str, torch.Tensor]], None]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
#: lr_scaling: "linear" multiplies the lr by the number of processes (the linear scaling rule)
LR_SCALINGS = ("none", "linear")


class DistillationModule(L.LightningModule):
    """Distills ``teacher`` into ``student`` with the loss ``Σ weight_k · term_k``, computed by its :attr:`step`.

    With ``teacher=None`` and a cross-entropy term only, it trains a model from scratch (this is how
    teachers are trained). The teacher stays frozen and in eval mode, is never optimized and is not
    written into checkpoints (it is reloaded from its own file). Terms with weight 0 are dropped.
    With ``preview`` the terms marked ``preview`` are weighted per image; the module then adds the
    :class:`~pckd_lightning.preview.PreviewWeighting` callback that schedules the weights from epoch to epoch.

    Under mixed precision the teacher runs under the student's autocast, its convolutions stored in the
    autocast dtype; ``TeacherOptions(float32=True)`` runs it in float32 instead (slower; numerics checks).
    The epoch values of ``train/*`` (LossMeter) and ``preview/*`` are reduced over the ranks before they
    are logged, on every rank at once; ``val/top1`` and ``val/top5`` are torchmetrics' synchronized values
    (in percent), ``val/top1_best`` their running maximum. ``train/<term>`` is each term's value (preview-
    weighted where marked), before its weight and warm-up; ``train/weighted/<term>`` is ``weight · warm-up
    factor ·`` that value, and these sum to ``train/loss``. The final epoch is always validated.
    """

    def __init__(
        self,
        student: ZooModel,
        terms: Mapping[str, LossTerm],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        teacher: ZooModel | None = None,
        preview: PreviewWeights | None = None,
        num_classes: int = 100,
        train_labels: torch.Tensor | None = None,
        performance: Performance | None = None,
        teacher_options: TeacherOptions | None = None,
        teacher_cache: TeacherCache | None = None,
        sync_batchnorm: bool = False,
        lr_scaling: str = "none",
        finite_check_every_n_steps: int = 25,
        log_every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        if lr_scaling not in LR_SCALINGS:
            raise ConfigError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {lr_scaling!r}")
        self.student = student
        self.teacher = None if teacher is None else freeze(teacher)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.performance = performance or Performance()
        self.teacher_options = teacher_options or TeacherOptions()
        self.finite_check_every_n_steps = finite_check_every_n_steps
        self.sync_batchnorm = sync_batchnorm
        self.lr_scaling = lr_scaling
        self.log_every_n_steps = log_every_n_steps
        self._batchnorm_synced = False
        self.meter = LossMeter()  # the step's losses and train top-1, averaged per epoch on the device
        self.terms = nn.ModuleDict(self._build_terms(terms, train_labels))
        self.skipped_terms = {name: t.skip_reason for name, t in terms.items() if t.skip_reason}
        #: the training step's computation (forward passes, each term's value, the total), with this
        #: module's student, terms and teacher
        self.step = DistillStep(
            self,
            preview=preview,
            performance=self.performance,
            teacher_options=self.teacher_options,
            teacher_cache=teacher_cache,
        )
        self._optimizer_wrappers: list[OptimizerWrapper] = []
        self._loss_listeners: list[LossListener] = []
        self.teacher_top1: float | None = None
        #: the 1-indexed epoch whose validation gave the latest ``val/top1`` (None before the first)
        self.last_validated_epoch: int | None = None
        # validate_args=False: the argument checks read values back to the host at every step
        accuracy = partial(MulticlassAccuracy, num_classes, average="micro", validate_args=False)
        self.val_top1 = accuracy(top_k=1)
        self.val_top5 = accuracy(top_k=min(5, num_classes))
        self.test_top1 = accuracy(top_k=1)
        self.test_top5 = accuracy(top_k=min(5, num_classes))
        self.val_top1_best = MaxMetric()
        self.val_top1_best.persistent(True)  # the best epoch survives a resume

    def _build_terms(
        self, terms: Mapping[str, LossTerm], train_labels: torch.Tensor | None
    ) -> dict[str, LossTerm]:
        if not terms:
            raise ConfigError("distill.terms is empty: a run needs at least one loss term (e.g. ce)")
        pair = PairInfo(self.student, self.teacher, self.num_classes, train_labels)
        active = {}
        for name, term in terms.items():
            if not isinstance(term, LossTerm):
                raise ConfigError(f"distill.terms.{name} is a {type(term).__name__}, not a LossTerm")
            if term.weight == 0:
                log.info("loss term %s has weight 0 and is dropped", name)
                continue
            try:
                term.build(pair)
            except ConfigError as err:  # the pair check's and the heads' refusals: say which term
                raise ConfigError(f"distill.terms.{name}: {err}") from None
            if term.skip_reason:
                log.warning("%s", term.skip_reason)
                continue
            active[name] = term
        if not active:
            raise ConfigError(
                f"every loss term of {sorted(terms)} has weight 0 or is skipped for this pair; keep at least "
                "one with a weight > 0 (e.g. distill.terms.ce.weight=1)"
            )
        return active

    def configure_callbacks(self) -> list[L.Callback]:
        """What every run needs, so it cannot be forgotten: the final epoch's validation, and the preview
        weights' scheduler whenever the step has preview weights."""
        return [ValidateFinalEpoch(), *callbacks_for(self.step.preview)]

    def setup(self, stage: str) -> None:
        """Under DDP global-batch BatchNorm for the student and the heads if asked, then the speed options."""
        if self.sync_batchnorm and world_size() > 1 and not self._batchnorm_synced:
            device = self.trainer.strategy.root_device if self._trainer is not None else self.device
            if device.type == "cuda":  # the module is moved there only after setup
                # timm's copy of torch's converter: it also keeps the activation of timm's BatchNormAct2d
                # (imported here: timm takes every run 1.5 s to import, and only CUDA DDP runs use it)
                from timm.layers import convert_sync_batchnorm

                self.student = convert_sync_batchnorm(self.student)
                self.terms = convert_sync_batchnorm(self.terms)
            else:  # torch's SyncBatchNorm is CUDA-only
                self.student = convert_batchnorm(self.student)
                self.terms = convert_batchnorm(self.terms)
            self._batchnorm_synced = True
        models = [m for m in (self.student, self.teacher) if m is not None]
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "mean"):  # set up by now: its normalization is known (the digits' own)
            for model in models:
                if isinstance(model, ZooModel):
                    model.adapt_to_data(datamodule.mean, datamodule.std)
        if self.performance.channels_last:
            for model in models:
                model.to(memory_format=torch.channels_last)
        if self.teacher is not None:
            self._set_teacher_precision()
        # torch.compile in place: parameter names (and checkpoints) stay as they are. Compiled terms fuse
        # their many small kernels, forward and backward, into a few: what bounds the step of small models
        # on a fast GPU is the host launching kernels, not the arithmetic
        compiled = [
            *(models if self.performance.compile else []),
            *(self.terms.values() if self.performance.compile_losses else []),
        ]
        if stage == "fit" and compiled:
            if self._loss_listeners:
                # a listener may take a gradient from the step's graph before the backward (retain_graph),
                # which compiled backward graphs allow only without donated buffers (torch's one switch)
                torch._functorch.config.donated_buffer = False
            for part in compiled:
                part.compile(mode=self.performance.compile_mode)

    def _set_teacher_precision(self) -> None:
        """Store the teacher's convolutions in the run's autocast dtype, unless it is to run in float32."""
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        if self.teacher_options.float32 and isinstance(plugin, HalfPrecision):
            raise ConfigError(
                f"teacher.float32=true needs float32 weights, but trainer.precision={self.trainer.precision} "
                "casts the whole model; use trainer.precision=bf16-mixed (or 16-mixed), or set teacher.float32=false"
            )
        if isinstance(plugin, MixedPrecision) and not self.teacher_options.float32:
            cast_convolutions(self.teacher, plugin.autocast_context_manager().fast_dtype)

    # -- training ------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits: a trained module is used as a plain classifier."""
        return self.student(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        ctx, losses, total = self.step(batch)
        for listener in self._loss_listeners:
            listener(losses)
        first = ctx.first_view()
        top1 = 100.0 * (first.student.logits.argmax(dim=1) == first.labels).float().mean()
        values = {f"train/{k}": v for k, v in losses.items()} | {"train/loss": total, "train/top1": top1}
        self.meter.update(values, weight=first.labels.shape[0], step=self.global_step)
        # on the steps whose values Lightning hands to the loggers ((step + 1) % n == 0), or they wait a turn
        if self.log_every_n_steps and (self.global_step + 1) % self.log_every_n_steps == 0:
            # per-step curves, opt-in: each logged step reads its values back from the device
            self.log_dict({f"{k}_step": v.detach() for k, v in values.items()}, on_step=True, on_epoch=False)
        if (self.global_step + 1) % self.finite_check_every_n_steps == 0:
            self.meter.check(self.current_epoch, self._last_good_checkpoint)
        if self._trainer is not None and batch_idx % self.trainer.log_every_n_steps == 0:
            # the progress bar's loss (this rank's running epoch mean), read back every few steps only: a
            # host tensor, so that the bar does not sync with the device at every step
            self.log("loss", self.meter.mean("train/loss").cpu(), prog_bar=True, logger=False)
        return total

    def on_train_epoch_start(self) -> None:
        for term in self.terms.values():
            term.on_train_epoch_start(self.current_epoch + 1)

    def _last_good_checkpoint(self) -> str | None:
        """The newest checkpoint file written so far (for the non-finite message), or None."""
        if self._trainer is None:
            return None
        paths = [c.last_model_path or c.best_model_path for c in self.trainer.checkpoint_callbacks]
        existing = [p for p in paths if p and os.path.isfile(p)]
        return max(existing, key=os.path.getmtime) if existing else None

    def on_validation_start(self) -> None:
        # before validation, hence before ModelCheckpoint can save weights a non-finite step broke
        self.meter.check(self.current_epoch, self._last_good_checkpoint)

    def on_train_epoch_end(self) -> None:
        self.meter.check(self.current_epoch, self._last_good_checkpoint)
        means = self.meter.means()  # over every rank's samples
        # the weights and warm-up factors are fixed within an epoch: the epoch mean of a term's share is
        # its factor times the epoch mean of its value, with no operation per step
        shares = {
            f"train/weighted/{name}": term.effective_weight * means[f"train/{name}"]
            for name, term in self.terms.items()
            if f"train/{name}" in means
        }
        self.log_dict(means | shares)
        self.meter.reset()

    def on_fit_start(self) -> None:
        if self.teacher is not None and self.teacher_options.measure and self.teacher_top1 is None:
            self.teacher_top1 = self._teacher_accuracy()
            if self.teacher_top1 is not None:
                self.check_teacher_accuracy(self.teacher_top1)

    def check_teacher_accuracy(self, top1: float) -> None:
        """A teacher near chance level is almost always a wrong or untrained checkpoint: say so loudly."""
        log.info("teacher val top-1: %.2f%%", top1)
        chance = 100.0 / self.num_classes
        minimum = self.teacher_options.min_accuracy
        if minimum is not None and top1 < minimum:
            raise CheckpointError(
                f"the teacher's val top-1 is {top1:.2f}%, below teacher.min_accuracy={minimum}; "
                "check model.teacher.checkpoint (right file? trained on this data set and class order?)"
            )
        if top1 < 2 * chance:
            log.warning(
                "THE TEACHER IS AT CHANCE LEVEL: val top-1 %.2f%% (chance %.2f%%). Distilling from it is "
                "pointless: check model.teacher.checkpoint, or set teacher.min_accuracy to make this an error.",
                top1,
                chance,
            )

    @torch.inference_mode()
    def _teacher_accuracy(self) -> float | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return None
        correct = total = 0
        # a held-out validation split holds training images the teacher learnt: it is scored on the test split
        held_out = getattr(datamodule, "val_source", "test") == "holdout"
        loader = datamodule.test_dataloader() if held_out else datamodule.val_dataloader()
        with self.trainer.precision_plugin.forward_context():  # the precision the teacher distills in
            for images, labels, *_ in loader:
                logits = self.step.teacher_forward(images.to(self.device))
                correct += (logits.argmax(1) == labels.to(logits.device)).sum().item()
                total += labels.numel()
        # under DDP each rank scored its share of the split (the data module's evaluation sampler), or the
        # whole split where it keeps Lightning's (debug settings): the sums give the same ratio either way
        counts = self.trainer.strategy.reduce(
            torch.tensor([correct, total], dtype=torch.int64, device=self.device), reduce_op="sum"
        )
        top1 = 100.0 * counts[0].item() / max(counts[1].item(), 1)
        for logger in self.loggers:
            logger.log_metrics({"teacher/val_top1": top1}, step=0)
        return top1

    # -- validation ----------------------------------------------------------------------------------

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, labels, *_ = batch
        logits = self.student(images)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        """Top-1/top-5 in percent (as in the paper's tables), synchronized over the ranks by torchmetrics."""
        top1, top5 = 100.0 * self.val_top1.compute(), 100.0 * self.val_top5.compute()
        self.val_top1.reset()
        self.val_top5.reset()
        if self.trainer.sanity_checking:
            return
        self.last_validated_epoch = self.current_epoch + 1
        self.log("val/top1", top1, prog_bar=True)
        self.log("val/top5", top5)
        self.val_top1_best(top1)
        self.log("val/top1_best", self.val_top1_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, labels, *_ = batch
        logits = self.student(images)
        self.test_top1.update(logits, labels)
        self.test_top5.update(logits, labels)

    def on_test_epoch_end(self) -> None:
        """The final test (``data.val_source=holdout``): the split that validation and tuning never saw."""
        self.log("test/top1", 100.0 * self.test_top1.compute())
        self.log("test/top5", 100.0 * self.test_top5.compute())
        self.test_top1.reset()
        self.test_top5.reset()

    # -- optimization and checkpoints ----------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student's and the terms' heads' parameters; never the teacher's."""
        return [*self.student.parameters(), *(p for p in self.terms.parameters() if p.requires_grad)]

    def wrap_optimizer(self, wrapper: OptimizerWrapper) -> None:
        """Have ``configure_optimizers`` train with ``wrapper(configured optimizer)``: a method's callback that
        needs an optimizer of its own (DOT) registers it in its ``setup``. Registering it again changes nothing."""
        if wrapper not in self._optimizer_wrappers:
            self._optimizer_wrappers.append(wrapper)

    def add_loss_listener(self, listener: LossListener) -> None:
        """Hand each training step's per-term losses (before weights and warm-up, with their graph) to
        ``listener`` before the backward: DOT takes the task part's gradient from them. A listener may keep the
        graph (``retain_graph``), so compiled parts then keep their backward buffers. Adding it again changes
        nothing."""
        if listener not in self._loss_listeners:
            self._loss_listeners.append(listener)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        for wrap in self._optimizer_wrappers:
            optimizer = wrap(optimizer)
        if self.lr_scaling == "linear" and self.trainer.world_size > 1:
            # the linear rule: a k-times global batch takes a k-times learning rate
            for group in optimizer.param_groups:
                group["lr"] *= self.trainer.world_size
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")
        }
        # a resume on another count is refused (a module saved outside a Trainer ran in one process)
        checkpoint[WORLD_SIZE_KEY] = self.trainer.world_size if self._trainer is not None else 1
        if self.teacher is not None:
            source = self.teacher.weights_file
            checkpoint["teacher"] = {
                "path": None if source is None else source.path,
                "sha256": None if source is None else source.sha256,
                "val_top1": self.teacher_top1,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_compatible(checkpoint["state_dict"])
        if self.teacher is not None:
            teacher_state = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
            # the teacher's accuracy is measured again as fitting starts, not taken from the checkpoint: a
            # resume may run it in another precision, with other data settings, or load another file
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **teacher_state}

    def _check_compatible(self, saved: Mapping[str, torch.Tensor]) -> None:
        """Refuse a resume whose student or heads differ from this run's, naming the difference."""
        current = {k: v.shape for k, v in self.state_dict().items() if not k.startswith("teacher.")}
        missing = sorted(set(current) - set(saved))
        unexpected = sorted(set(saved) - set(current))
        reshaped = sorted(k for k in set(current) & set(saved) if tuple(saved[k].shape) != tuple(current[k]))
        if missing or unexpected or reshaped:
            raise ConfigError(
                "the checkpoint does not fit this run's model: it was saved with another student "
                f"architecture or other loss-term heads (missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"other shapes {reshaped[:5]}). Resume with the config the checkpoint was trained with "
                "(its run folder has config.yaml), or drop ckpt_path to start a new run."
            )

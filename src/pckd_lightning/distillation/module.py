"""The LightningModule of pckd-lightning: a frozen teacher, a trainable student and named loss terms."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import HalfPrecision, MixedPrecision
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from pckd_lightning.distillation.numerics import LossMeter
from pckd_lightning.distillation.teacher import cast_convolutions, freeze
from pckd_lightning.distributed import convert_batchnorm, world_size
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import LossTerm, PairInfo
from pckd_lightning.models import ZooModel

log = logging.getLogger(__name__)
# The epoch values of train/* (LossMeter) and preview/* are reduced over the ranks before they are logged,
# on every rank at once; Lightning's own reduction (sync_dist) would run lazily, on whichever rank reads
# them first, and wait for the others. val/top1 and val/top5 are torchmetrics' synchronized values (in
# percent), val/top1_best their running maximum.
# Lightning cannot tell, and would warn under DDP.
warnings.filterwarnings(
    "ignore",
    message=r"It is recommended to use `self\.log\('(train/|preview/|val/top1|val/top5|test/)",
    category=PossibleUserWarning,
)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
SampleWeighting = Callable[[torch.Tensor], torch.Tensor]
#: torch.compile's modes (None: its default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class DistillationModule(L.LightningModule):
    """Distills ``teacher`` into ``student`` with the loss ``Σ weight_k · term_k``.

    With ``teacher=None`` and a cross-entropy term only, it trains a model from scratch (this is how
    teachers are trained). The teacher stays frozen and in eval mode, is never optimized and is not
    written into checkpoints (it is reloaded from its own file). Terms with weight 0 are dropped.
    A callable set as ``sample_weighting`` (the :class:`PreviewWeighting` callback sets itself)
    turns the per-image cross-entropy of view 0 into weights for the terms marked ``preview``.

    Under mixed precision the teacher runs under the student's autocast, its convolutions stored in the
    autocast dtype; ``teacher_float32=True`` runs it in float32 instead (slower; for numerics checks).
    """

    def __init__(
        self,
        student: ZooModel,
        terms: Mapping[str, LossTerm],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        teacher: ZooModel | None = None,
        num_classes: int = 100,
        measure_teacher: bool = True,
        finite_check_every_n_steps: int = 25,
        teacher_min_accuracy: float | None = None,
        teacher_float32: bool = False,
        train_labels: torch.Tensor | None = None,
        sync_batchnorm: bool = False,
        channels_last: bool = False,
        compile_models: bool = False,
        compile_losses: bool = False,
        compile_mode: str | None = None,
        scale_lr_with_world_size: bool = False,
        log_every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = None if teacher is None else freeze(teacher)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.measure_teacher = measure_teacher
        self.finite_check_every_n_steps = finite_check_every_n_steps
        self.teacher_min_accuracy = teacher_min_accuracy
        self.teacher_float32 = teacher_float32
        self.sync_batchnorm = sync_batchnorm
        self.channels_last = channels_last
        self.compile_models = compile_models
        self.compile_losses = compile_losses
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(
                f"performance.compile_mode={compile_mode!r} is not a torch.compile mode; valid values: "
                f"{', '.join(map(str, COMPILE_MODES))} (reduce-overhead records CUDA graphs)"
            )
        self.compile_mode = compile_mode
        self.scale_lr_with_world_size = scale_lr_with_world_size
        self.log_every_n_steps = log_every_n_steps
        self._batchnorm_synced = False
        self.meter = LossMeter()  # the step's losses and train top-1, averaged per epoch on the device
        self.sample_weighting: SampleWeighting | None = None
        self.terms = nn.ModuleDict(self._build_terms(terms, train_labels))
        self.skipped_terms = {name: t.skip_reason for name, t in terms.items() if t.skip_reason}
        self.teacher_top1: float | None = None
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
            term.build(pair)
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

    @property
    def preview_terms(self) -> list[str]:
        return [name for name, term in self.terms.items() if term.preview]

    def setup(self, stage: str) -> None:
        """Under DDP global-batch BatchNorm for the student and the heads if asked, then the speed options."""
        if self.sync_batchnorm and world_size() > 1 and not self._batchnorm_synced:
            device = self.trainer.strategy.root_device if self._trainer is not None else self.device
            if device.type == "cuda":  # the module is moved there only after setup
                self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
                self.terms = nn.SyncBatchNorm.convert_sync_batchnorm(self.terms)
            else:  # torch's SyncBatchNorm is CUDA-only
                self.student = convert_batchnorm(self.student)
                self.terms = convert_batchnorm(self.terms)
            self._batchnorm_synced = True
        models = [m for m in (self.student, self.teacher) if m is not None]
        if self.channels_last:
            for model in models:
                model.to(memory_format=torch.channels_last)
        if self.teacher is not None:
            self._set_teacher_precision()
        # torch.compile in place: parameter names (and checkpoints) stay as they are. Compiled terms fuse
        # their many small kernels, forward and backward, into a few: what bounds the step of small models
        # on a fast GPU is the host launching kernels, not the arithmetic
        compiled = [
            *(models if self.compile_models else []),
            *(self.terms.values() if self.compile_losses else []),
        ]
        if stage == "fit":
            for part in compiled:
                part.compile(mode=self.compile_mode)

    def _set_teacher_precision(self) -> None:
        """Store the teacher's convolutions in the run's autocast dtype, unless it is to run in float32."""
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        if self.teacher_float32 and isinstance(plugin, HalfPrecision):
            raise ConfigError(
                f"teacher.float32=true needs float32 weights, but trainer.precision={self.trainer.precision} "
                "casts the whole model; use trainer.precision=bf16-mixed (or 16-mixed), or set teacher.float32=false"
            )
        if isinstance(plugin, MixedPrecision) and not self.teacher_float32:
            cast_convolutions(self.teacher, plugin.autocast_context_manager().fast_dtype)

    def _teacher_forward(self, images: torch.Tensor, **kwargs: Any) -> Any:
        """The frozen teacher's forward: under the run's autocast, or in float32 if ``teacher_float32``."""
        if not self.teacher_float32:
            return self.teacher(images, **kwargs)
        with torch.autocast(images.device.type, enabled=False):
            return self.teacher(images.float(), **kwargs)

    # -- training ------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits: a trained module is used as a plain classifier."""
        return self.student(x)

    def context(self, batch: tuple[torch.Tensor, ...]) -> DistillContext:
        """The teacher's and the student's forward passes of a training batch, as the loss terms read them."""
        images, labels, indices = batch
        num_views = images.shape[1] if images.ndim == 5 else 1
        if images.ndim == 5:
            images = images.flatten(0, 1)  # image-major: image 0 views 0..V-1, image 1 ...
            labels = labels.repeat_interleave(num_views)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_out = None
        if self.teacher is not None:  # first: its activations are freed before the student's are kept
            with torch.no_grad():
                teacher_out = self._teacher_forward(images, with_features=True)
        student_out = self.student(images, with_features=True)
        return DistillContext(
            student=student_out,
            teacher=teacher_out,
            labels=labels,
            student_model=self.student,
            teacher_model=self.teacher,
            num_views=num_views,
            indices=indices,
        )

    def compute_losses(self, ctx: DistillContext) -> dict[str, torch.Tensor]:
        """Each term's (sample-weighted) value; ``ctx`` holds all views, terms get what they read."""
        first = ctx.first_view()
        weights = None
        if self.sample_weighting is not None and self.preview_terms:
            weights = self.sample_weighting(first.cross_entropy)
        losses = {}
        for name, term in self.terms.items():
            term_ctx = ctx if term.views == "all" else first
            value = term(term_ctx)
            if value.ndim == 1:
                if term.preview and weights is not None:
                    views = term_ctx.num_views
                    value = value * (weights if views == 1 else weights.repeat_interleave(views))
                value = value.mean()
            losses[name] = value
        return losses

    def total_loss(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``Σ weight_k · loss_k``. Unit weights multiply nothing: on a GPU each operation is a kernel launch."""
        weighted = [v if self.terms[k].weight == 1 else self.terms[k].weight * v for k, v in losses.items()]
        return sum(weighted[1:], start=weighted[0])

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        ctx = self.context(batch)
        losses = self.compute_losses(ctx)
        total = self.total_loss(losses)
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
        self.log_dict(self.meter.means())  # means over every rank's samples
        self.meter.reset()

    def on_fit_start(self) -> None:
        if self.preview_terms and self.sample_weighting is None:
            raise ConfigError(
                f"loss terms {self.preview_terms} are marked preview: true, but no PreviewWeighting callback is "
                "configured; set distill.preview (e.g. distill=pckd) or set preview: false on those terms"
            )
        if self.teacher is not None and self.measure_teacher and self.teacher_top1 is None:
            self.teacher_top1 = self._teacher_accuracy()
            if self.teacher_top1 is not None:
                self._check_teacher_accuracy(self.teacher_top1)

    def _check_teacher_accuracy(self, top1: float) -> None:
        """A teacher near chance level is almost always a wrong or untrained checkpoint: say so loudly."""
        log.info("teacher val top-1: %.2f%%", top1)
        chance = 100.0 / self.num_classes
        if self.teacher_min_accuracy is not None and top1 < self.teacher_min_accuracy:
            raise CheckpointError(
                f"the teacher's val top-1 is {top1:.2f}%, below teacher.min_accuracy={self.teacher_min_accuracy}; "
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
                logits = self._teacher_forward(images.to(self.device))
                correct += (logits.argmax(1) == labels.to(logits.device)).sum().item()
                total += labels.numel()
        top1 = 100.0 * correct / max(total, 1)
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

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scale_lr_with_world_size and self.trainer.world_size > 1:
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
        if self.teacher is not None:
            checkpoint["teacher"] = {
                "path": getattr(self.teacher, "checkpoint_path", None),
                "sha256": getattr(self.teacher, "checkpoint_sha256", None),
                "val_top1": self.teacher_top1,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_compatible(checkpoint["state_dict"])
        if self.teacher is not None:
            teacher_state = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **teacher_state}
            self.teacher_top1 = checkpoint.get("teacher", {}).get("val_top1")

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

"""The preview strategy as a Lightning callback: an epoch schedule of per-image weights (spec §3)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from pckd_lightning.distributed import global_mean, reduced_to_host, world_size
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF

SCHEDULES = ("epoch", "progress")
#: the largest threshold: difficulties are float32, a larger threshold would compare as infinity
MAX_THRESHOLD = float(torch.finfo(torch.float32).max)


class PreviewWeighting(L.Callback):
    """Schedules the threshold ``t = base^x`` and turns per-image difficulty into weights.

    ``schedule="epoch"`` (published): ``x = e``, the 1-indexed epoch. ``schedule="progress"``:
    ``x = e · reference_epochs / max_epochs``, so a short run walks the threshold curve of the
    ``reference_epochs``-epoch recipe (with 1.005 and 240 epochs, 1.005 → 3.3 instead of 1.005 → 1.105 in
    20 epochs). ``base`` is refused at start-up when the last threshold would not be a finite float32.

    The DistillationModule calls the callback with the per-image cross-entropy of view 0; it returns
    the weights ``v_i`` (no gradient) that the module applies to every term marked ``preview: true``.
    Per epoch it logs ``preview/threshold``, ``preview/exponent`` (x: which schedule ran),
    ``preview/hard_fraction`` and ``preview/mean_weight``, and to W&B a histogram of the difficulties
    (``preview/difficulty``, γ clipped at 5).
    Statistics are accumulated on the device and read once per epoch, so the step never syncs.
    """

    #: the difficulty histogram (logged to W&B per epoch) covers γ in [0, HISTOGRAM_MAX] in HISTOGRAM_BINS bins
    HISTOGRAM_BINS, HISTOGRAM_MAX = 50, 5.0

    def __init__(self, base: float = 1.005, schedule: str = "epoch", reference_epochs: int = 240) -> None:
        if (
            isinstance(base, bool)
            or not isinstance(base, (int, float))
            or not math.isfinite(base)
            or base <= 0
        ):
            raise ConfigError(
                f"PreviewWeighting: base must be a finite number > 0 (published 1.005), got {base!r}; "
                "set distill.preview.base"
            )
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"PreviewWeighting: schedule must be one of {', '.join(SCHEDULES)} (epoch: t = base^e, the "
                f"published one; progress: t = base^(e·reference_epochs/max_epochs)), got {schedule!r}; "
                "set distill.preview.schedule"
            )
        if (
            isinstance(reference_epochs, bool)
            or not isinstance(reference_epochs, int)
            or reference_epochs < 1
        ):
            raise ConfigError(
                f"PreviewWeighting: reference_epochs must be an int >= 1 (the recipe's length, 240), got "
                f"{reference_epochs!r}; set distill.preview.reference_epochs"
            )
        # a float: an int base would make int thresholds, which overflow int64 against a tensor
        self.base = float(base)
        self.schedule = schedule
        self.reference_epochs = reference_epochs
        #: the run's number of epochs (set in setup; the progress schedule divides by it)
        self.max_epochs: int | None = None
        #: the 1-indexed epoch whose threshold is in force
        self.epoch = 1
        self._stats: torch.Tensor | None = None  # [hard count, weight sum] of the epoch
        self._count = 0  # samples weighted this epoch
        self._histogram: torch.Tensor | None = None

    @property
    def exponent(self) -> float:
        """``x`` of ``t = base^x`` in the current epoch."""
        if self.schedule == "epoch":
            return float(self.epoch)
        if self.max_epochs is None:
            raise RuntimeError("PreviewWeighting: schedule=progress needs max_epochs, which setup() sets")
        return self.epoch * self.reference_epochs / self.max_epochs

    @property
    def threshold(self) -> float:
        if self.schedule == "epoch":
            return LF.preview_threshold(self.epoch, self.base)
        return self.base**self.exponent

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Checks the schedule against the run's length (before any work), then weights the module's terms."""
        self.set_max_epochs(trainer.max_epochs)
        rank_zero_info(
            f"PreviewWeighting: schedule={self.schedule}, thresholds {self.base:g}^x for x = "
            + (
                "the epoch"
                if self.schedule == "epoch"
                else f"epoch·{self.reference_epochs}/{self.max_epochs}"
            )
        )
        pl_module.sample_weighting = self

    def set_max_epochs(self, max_epochs: int | None) -> None:
        """Refuse a schedule whose last threshold ``base^x`` is beyond float32, naming the valid bases."""
        known = max_epochs is not None and max_epochs >= 1
        if not known and self.schedule == "progress":
            raise ConfigError(
                f"PreviewWeighting: schedule=progress needs a finite trainer.max_epochs, got {max_epochs!r}; "
                "set trainer.max_epochs or distill.preview.schedule=epoch"
            )
        self.max_epochs = max_epochs if known else None
        if not known:  # the epoch schedule of a run without an epoch limit: no last threshold to check
            return
        last = float(max_epochs if self.schedule == "epoch" else self.reference_epochs)
        if self.base > 1 and math.log(self.base) * last > math.log(MAX_THRESHOLD):
            largest = math.exp(math.log(MAX_THRESHOLD) / last)
            raise ConfigError(
                f"PreviewWeighting: base={self.base:g} gives the threshold {self.base:g}^{last:g} in the last "
                f"epoch, beyond float32 ({MAX_THRESHOLD:.3g}); with schedule={self.schedule} over "
                f"{max_epochs} epochs the valid range is 0 < base <= {largest:.6g} (published 1.005); "
                "set distill.preview.base"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1
        self._stats = self._histogram = None
        self._count = 0

    @staticmethod
    def difficulty(ce_per_image: torch.Tensor) -> torch.Tensor:
        # the difficulty normalizer is the mean over the global batch (all ranks under DDP)
        batch_mean = global_mean(ce_per_image) if world_size() > 1 else None
        return LF.preview_difficulty(ce_per_image, batch_mean)

    def weights(self, ce_per_image: torch.Tensor) -> torch.Tensor:
        """This epoch's weights, left out of the epoch's statistics (for a measurement such as GradientShare)."""
        return LF.difficulty_weights(self.difficulty(ce_per_image), self.threshold)

    def __call__(self, ce_per_image: torch.Tensor) -> torch.Tensor:
        gamma = self.difficulty(ce_per_image)
        threshold = self.threshold
        weights = LF.difficulty_weights(gamma, threshold)
        # counts stay on the device (hard, weight sum) or on the host (samples): no host-device copy
        stats = torch.stack([(gamma > threshold).sum(dtype=torch.float32), weights.sum()])
        self._count += weights.numel()
        histogram = torch.histc(
            gamma.clamp(max=self.HISTOGRAM_MAX), self.HISTOGRAM_BINS, 0.0, self.HISTOGRAM_MAX
        )
        if self._stats is None:
            self._stats, self._histogram = stats, histogram
        else:
            self._stats, self._histogram = self._stats + stats, self._histogram + histogram
        return weights

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("preview/threshold", self.threshold)
        pl_module.log("preview/exponent", self.exponent)
        if self._stats is None:
            return
        # summed over the ranks here, on every rank: a sync_dist log would be reduced lazily, by whichever
        # rank reads it first (the progress bar, on rank 0 only), and wait forever for the others
        totals = torch.cat([self._histogram, self._stats, self._stats.new_full((1,), float(self._count))])
        *histogram, hard, weight_sum, count = reduced_to_host(totals)
        pl_module.log("preview/hard_fraction", hard / count)
        pl_module.log("preview/mean_weight", weight_sum / count)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                edges = torch.linspace(0.0, self.HISTOGRAM_MAX, self.HISTOGRAM_BINS + 1).tolist()
                histogram = wandb.Histogram(np_histogram=(histogram, edges))
                logger.log_metrics({"preview/difficulty": histogram}, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "base": self.base, "schedule": self.schedule}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = state_dict["epoch"]

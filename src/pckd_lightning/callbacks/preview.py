"""The preview strategy as a Lightning callback: an epoch schedule of per-image weights (spec §3)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from pckd_lightning.distributed import global_mean, reduced_to_host, world_size
from pckd_lightning.losses import functional as LF


class PreviewWeighting(L.Callback):
    """Schedules the threshold ``t_e = base^e`` and turns per-image difficulty into weights.

    The DistillationModule calls the callback with the per-image cross-entropy of view 0; it returns
    the weights ``v_i`` (no gradient) that the module applies to every term marked ``preview: true``.
    Per epoch it logs ``preview/threshold``, ``preview/hard_fraction`` and ``preview/mean_weight``, and
    to W&B a histogram of the difficulties (``preview/difficulty``, γ clipped at 5).
    Statistics are accumulated on the device and read once per epoch, so the step never syncs.
    """

    #: the difficulty histogram (logged to W&B per epoch) covers γ in [0, HISTOGRAM_MAX] in HISTOGRAM_BINS bins
    HISTOGRAM_BINS, HISTOGRAM_MAX = 50, 5.0

    def __init__(self, base: float = 1.005) -> None:
        if base <= 0:
            raise ValueError(f"preview base must be > 0, got {base}")
        self.base = base
        #: the 1-indexed epoch whose threshold is in force
        self.epoch = 1
        self._stats: torch.Tensor | None = None  # [hard count, weight sum] of the epoch
        self._count = 0  # samples weighted this epoch
        self._histogram: torch.Tensor | None = None

    @property
    def threshold(self) -> float:
        return LF.preview_threshold(self.epoch, self.base)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.sample_weighting = self

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1
        self._stats = self._histogram = None
        self._count = 0

    def __call__(self, ce_per_image: torch.Tensor) -> torch.Tensor:
        # the difficulty normalizer is the mean over the global batch (all ranks under DDP)
        batch_mean = global_mean(ce_per_image) if world_size() > 1 else None
        gamma = LF.preview_difficulty(ce_per_image, batch_mean)
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
        return {"epoch": self.epoch, "base": self.base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = state_dict["epoch"]

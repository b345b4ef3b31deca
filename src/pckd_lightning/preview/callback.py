"""The preview strategy's scheduler (spec §3): moves the step's preview weights from epoch to epoch.

The weights themselves are computed by the :class:`~pckd_lightning.preview.PreviewWeights` that the
training step owns; the DistillationModule adds this callback itself (:func:`callbacks_for`) whenever its
step has preview weights.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from pckd_lightning.errors import ConfigError
from pckd_lightning.preview.weights import PreviewWeights


def callbacks_for(weights: PreviewWeights | None) -> list[L.Callback]:
    """What a module whose step has ``weights`` must run with: their scheduler, or nothing without weights."""
    return [] if weights is None else [PreviewWeighting()]


class PreviewWeighting(L.Callback):
    """Epoch bookkeeping and logging of the module's ``step.preview``.

    At setup it checks the schedule against ``trainer.max_epochs`` (before any work); at each epoch's start
    it puts that epoch's threshold in force; at its end it logs ``preview/threshold``,
    ``preview/exponent`` (x of ``t = base^x``: which schedule ran), ``preview/hard_fraction`` and
    ``preview/mean_weight``, and to W&B a histogram of the difficulties (``preview/difficulty``, γ
    clipped at 5).
    """

    @staticmethod
    def weights_of(pl_module: L.LightningModule) -> PreviewWeights:
        step = getattr(pl_module, "step", None)
        preview = getattr(step, "preview", None)
        if not isinstance(preview, PreviewWeights):
            raise ConfigError(
                "PreviewWeighting schedules a DistillationModule's preview weights, but this module has none; "
                "set distill.preview (e.g. distill=pckd) or drop the callback"
            )
        return preview

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        preview = self.weights_of(pl_module)
        preview.set_max_epochs(trainer.max_epochs)
        rank_zero_info(preview.describe())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights_of(pl_module).start_epoch(trainer.current_epoch + 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        preview = self.weights_of(pl_module)
        pl_module.log("preview/threshold", preview.threshold)
        pl_module.log("preview/exponent", preview.exponent)
        # summed over the ranks inside, on every rank: a sync_dist log would be reduced lazily, by whichever
        # rank reads it first (the progress bar, on rank 0 only), and wait forever for the others
        stats = preview.epoch_statistics()
        if stats is None:
            return
        pl_module.log("preview/hard_fraction", stats["hard_fraction"])
        pl_module.log("preview/mean_weight", stats["mean_weight"])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                edges = torch.linspace(0.0, preview.HISTOGRAM_MAX, preview.HISTOGRAM_BINS + 1).tolist()
                histogram = wandb.Histogram(np_histogram=(stats["histogram"], edges))
                logger.log_metrics({"preview/difficulty": histogram}, step=trainer.global_step)

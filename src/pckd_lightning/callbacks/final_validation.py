"""Validation of the final epoch, whatever ``check_val_every_n_epoch`` says: the last accuracy is the final
weights' accuracy, never an earlier epoch's."""

from __future__ import annotations

import lightning as L


class ValidateFinalEpoch(L.Callback):
    """Validate the last epoch of ``trainer.max_epochs`` even when it is not a multiple of
    ``check_val_every_n_epoch`` (Lightning validates only on multiples; the summary's ``last_top1`` and the
    best checkpoint would then miss the final weights)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every = trainer.check_val_every_n_epoch
        final = trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs
        if final and every is not None and every > 1:
            trainer.check_val_every_n_epoch = (
                1  # this run's last epoch: Lightning reads it at the epoch's end
            )

"""The best checkpoint's score kept across a resume into another folder.

Lightning's ModelCheckpoint restores only ``best_model_path`` when the checkpoint folder changed (a run
resumed with ``hydra.run.dir`` elsewhere, a moved run folder, a multirun's sweep folder); it drops the score,
so the first validation after the resume, however low, became the "best" checkpoint while ``best_top1``
still held the earlier best: ``summary.json`` named a checkpoint of another epoch than its accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch


class KeepBestScore(L.Callback):
    """Puts back the monitored checkpoints' best score (and path) that Lightning dropped on a resume."""

    def __init__(self) -> None:
        self._saved: dict[str, Any] = {}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._saved = checkpoint.get("callbacks") or {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            state = self._saved.get(callback.state_key) or {}
            score, path = state.get("best_model_score"), state.get("best_model_path")
            if callback.monitor is None or callback.best_model_score is not None or score is None or not path:
                continue
            if not Path(path).is_file():  # a moved run folder: its best file moved with it, else none is left
                moved = Path(callback.dirpath or "") / Path(path).name
                if not moved.is_file():
                    continue
                path = str(moved)
            score = torch.as_tensor(score)
            callback.best_model_path, callback.best_model_score = path, score
            callback.best_k_models = {path: score}
            callback.kth_best_model_path, callback.kth_value = path, score
        self._saved = {}

"""The loggers every run has: its CSV record (appended to on a resume) and one plain line per epoch."""

from __future__ import annotations

import csv
import logging
import time
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

progress_log = logging.getLogger("pckd_lightning.progress")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` (the resumed run's history) is kept."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` with ``append``: the runner sets it on a resume.

    A new run in a folder that already has a ``metrics.csv`` starts it afresh (Lightning's behaviour); a
    resumed run appends to the history :func:`pckd_lightning.resume.carry_history` wrote there.
    """

    def __init__(self, *args: Any, append: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = _AppendingWriter if self.append else ExperimentWriter
            self._experiment = writer(log_dir=self.log_dir)
        return self._experiment


class EpochLineLogger(Logger):
    """One plain line per epoch (losses, train/val top-1, lr, time) to Python logging: ``train.log`` and a
    console that is not a terminal (a batch system's log file) keep a readable record of the run.

    Lightning hands a logger the validation metrics, then the epoch's training means; the line is written
    when the training means (``train/loss``) arrive.
    """

    def __init__(self, max_epochs: int | None = None) -> None:
        super().__init__()
        self.max_epochs = max_epochs
        self._latest: dict[str, float] = {}
        self._since = time.perf_counter()

    @property
    def name(self) -> str:
        return "epoch_lines"

    @property
    def version(self) -> str:
        return ""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyper-parameters are in config.yaml; nothing to print."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._latest.update({k: float(v) for k, v in metrics.items()})
        if "train/loss" in metrics:
            progress_log.info("%s", self.line())
            self._since = time.perf_counter()
            # the next epoch's validation values arrive afresh, or the next line says there were none
            self._latest = {k: v for k, v in self._latest.items() if not k.startswith("val/")}

    def line(self) -> str:
        m = self._latest
        epoch = int(m.get("epoch", 0)) + 1
        parts = [f"epoch {epoch}" + (f"/{self.max_epochs}" if self.max_epochs else "")]
        terms = [
            f"{k[6:]} {v:.4f}"
            for k, v in m.items()
            if k.startswith("train/")
            and k[6:] not in ("loss", "top1")
            and not k.startswith("train/weighted/")
        ]
        parts.append(f"loss {m['train/loss']:.4f}" + (f" ({', '.join(terms)})" if terms else ""))
        if "train/top1" in m:
            parts.append(f"train top-1 {m['train/top1']:.2f}%")
        if "val/top1" in m:
            best = f" (best {m['val/top1_best']:.2f}%)" if "val/top1_best" in m else ""
            parts.append(f"val top-1 {m['val/top1']:.2f}%{best}")
        else:
            parts.append("no validation this epoch")
        lrs = [v for k, v in m.items() if k.startswith("lr-")]
        if lrs:
            parts.append(f"lr {lrs[0]:.4g}")
        parts.append(f"{time.perf_counter() - self._since:.1f} s")
        return "  ".join(parts)

"""The preview weights of spec §3: per-image weights from the batch's difficulty and an epoch threshold.

The training step owns a :class:`PreviewWeights` and multiplies every term marked ``preview: true`` by
its weights; the :class:`~pckd_lightning.preview.PreviewWeighting` callback only moves it to the next
epoch and logs its statistics. The formulas are :mod:`pckd_lightning.losses.functional`'s. Free of Hydra:
the weights are built from Python as well as from a config.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pckd_lightning.distributed import global_mean, reduced_to_host, world_size
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF
from pckd_lightning.schema.fields import Int, Number, accepts, require

SCHEDULES = ("epoch", "progress")

#: the largest threshold: difficulties are float32, a larger threshold would compare as infinity
MAX_THRESHOLD = float(torch.finfo(torch.float32).max)


class PreviewWeights:
    """Turns per-image difficulty into weights ``v_i`` under the threshold ``t = base^x``.

    ``schedule="epoch"`` (published): ``x = e``, the 1-indexed epoch. ``schedule="progress"``:
    ``x = e · reference_epochs / max_epochs``, so a short run walks the threshold curve of the
    ``reference_epochs``-epoch recipe (with 1.005 and 240 epochs, 1.005 → 3.3 instead of 1.005 → 1.105 in
    20 epochs). ``base`` is refused when the last threshold would not be a finite float32.

    The epoch's statistics (hard images, weight sum, a histogram of the difficulties) are accumulated on
    the device and read once per epoch by :meth:`epoch_statistics`, so the step never syncs.
    """

    #: the difficulty histogram covers γ in [0, HISTOGRAM_MAX] in HISTOGRAM_BINS bins
    HISTOGRAM_BINS, HISTOGRAM_MAX = 50, 5.0

    def __init__(self, base: float = 1.005, schedule: str = "epoch", reference_epochs: int = 240) -> None:
        if not accepts(Number(0, low_open=True), base):
            raise ConfigError(
                f"PreviewWeights: base must be a finite number > 0 (published 1.005), got {base!r}; "
                "set distill.preview.base"
            )
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"PreviewWeights: schedule must be one of {', '.join(SCHEDULES)} (epoch: t = base^e, the "
                f"published one; progress: t = base^(e·reference_epochs/max_epochs)), got {schedule!r}; "
                "set distill.preview.schedule"
            )
        require(
            Int(1),
            reference_epochs,
            "PreviewWeights",
            "reference_epochs",
            note=" (the recipe's length, 240)",
            fix="; set distill.preview.reference_epochs",
        )
        # a float: an int base would make int thresholds, which overflow int64 against a tensor
        self.base = float(base)
        self.schedule = schedule
        self.reference_epochs = reference_epochs
        #: the run's number of epochs (the progress schedule divides by it)
        self.max_epochs: int | None = None
        #: the 1-indexed epoch whose threshold is in force
        self.epoch = 1
        self._stats: torch.Tensor | None = None  # [hard count, weight sum] of the epoch
        self._count = 0  # samples weighted this epoch
        self._histogram: torch.Tensor | None = None

    def describe(self) -> str:
        """Which schedule runs, in words (logged at the start of a run)."""
        x = "the epoch" if self.schedule == "epoch" else f"epoch·{self.reference_epochs}/{self.max_epochs}"
        return f"preview weights: schedule={self.schedule}, thresholds {self.base:g}^x for x = {x}"

    @property
    def exponent(self) -> float:
        """``x`` of ``t = base^x`` in the current epoch."""
        if self.schedule == "epoch":
            return float(self.epoch)
        if self.max_epochs is None:
            raise RuntimeError(
                "PreviewWeights: schedule=progress needs max_epochs; call set_max_epochs first"
            )
        return self.epoch * self.reference_epochs / self.max_epochs

    @property
    def threshold(self) -> float:
        if self.schedule == "epoch":
            return LF.preview_threshold(self.epoch, self.base)
        return self.base**self.exponent

    def set_max_epochs(self, max_epochs: int | None) -> None:
        """Refuse a schedule whose last threshold ``base^x`` is beyond float32, naming the valid bases."""
        known = max_epochs is not None and max_epochs >= 1
        if not known and self.schedule == "progress":
            raise ConfigError(
                f"PreviewWeights: schedule=progress needs a finite trainer.max_epochs, got {max_epochs!r}; "
                "set trainer.max_epochs or distill.preview.schedule=epoch"
            )
        self.max_epochs = max_epochs if known else None
        if not known:  # the epoch schedule of a run without an epoch limit: no last threshold to check
            return
        last = float(max_epochs if self.schedule == "epoch" else self.reference_epochs)
        if self.base > 1 and math.log(self.base) * last > math.log(MAX_THRESHOLD):
            largest = math.exp(math.log(MAX_THRESHOLD) / last)
            raise ConfigError(
                f"PreviewWeights: base={self.base:g} gives the threshold {self.base:g}^{last:g} in the last "
                f"epoch, beyond float32 ({MAX_THRESHOLD:.3g}); with schedule={self.schedule} over "
                f"{max_epochs} epochs the valid range is 0 < base <= {largest:.6g} (published 1.005); "
                "set distill.preview.base"
            )

    def start_epoch(self, epoch: int) -> None:
        """Put the threshold of the 1-indexed ``epoch`` in force and start its statistics afresh."""
        self.epoch = epoch
        self._stats = self._histogram = None
        self._count = 0

    @staticmethod
    def difficulty(ce_per_image: torch.Tensor) -> torch.Tensor:
        # the difficulty normalizer is the mean over the global batch (all ranks under DDP)
        batch_mean = global_mean(ce_per_image) if world_size() > 1 else None
        return LF.preview_difficulty(ce_per_image, batch_mean)

    def __call__(self, ce_per_image: torch.Tensor, record: bool = True) -> torch.Tensor:
        """This epoch's weights (no gradient); ``record=False`` leaves them out of the epoch's statistics
        (for a measurement on the side, such as GradientShare's)."""
        gamma = self.difficulty(ce_per_image)
        threshold = self.threshold
        weights = LF.difficulty_weights(gamma, threshold)
        if not record:
            return weights
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

    def epoch_statistics(self) -> dict[str, Any] | None:
        """The epoch's ``hard_fraction``, ``mean_weight`` and difficulty ``histogram`` (counts per bin),
        summed over the ranks; None when nothing was weighted. Every rank must call it (a collective)."""
        if self._stats is None:
            return None
        totals = torch.cat([self._histogram, self._stats, self._stats.new_full((1,), float(self._count))])
        *histogram, hard, weight_sum, count = reduced_to_host(totals)
        return {"hard_fraction": hard / count, "mean_weight": weight_sum / count, "histogram": histogram}

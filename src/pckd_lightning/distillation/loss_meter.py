"""The training step's loss values, averaged per epoch and watched for NaN/Inf, on the device.

Lightning's ``self.log`` costs about half a millisecond of Python per call and per step, and a progress
bar that shows a device tensor reads it back (a host sync) at every step. On a GPU whose step is bound by
the host, that is a large share of the step, so the module keeps its per-step values here instead: one
stacked tensor per step, added to on the device, read back only every few steps (the non-finite check)
and once per epoch (the logged means).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist

from pckd_lightning.distributed import reduced_to_host
from pckd_lightning.errors import PCKDError

#: the "first non-finite step" of a value that has stayed finite
NEVER = torch.iinfo(torch.int64).max
#: values that are sums of the terms: non-finite because a term is
AGGREGATES = ("train/loss", "train/top1")


class NonFiniteLossError(PCKDError, FloatingPointError):
    """A loss term became NaN or infinite; the run stops before any checkpoint of broken weights."""


class LossMeter:
    """Sample-weighted epoch sums of named step values, and the first step at which each went non-finite.

    :meth:`update` adds one step and never reads a value back to the host. :meth:`check` reads the
    first non-finite steps (every few steps, and before anything is checkpointed) and raises, naming
    the terms, the step and the epoch. :meth:`means` reads the epoch's means once. Under DDP both
    reduce over the ranks first, so every rank sees the same means and raises together.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.count = 0  # samples added this epoch (on the host: it is known without reading the device)
        self._sums: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None

    def update(self, values: Mapping[str, torch.Tensor], weight: int, step: int) -> None:
        """Add scalar ``values`` of one step, each the mean over ``weight`` samples, at global ``step``."""
        stacked = torch.stack([v.detach().float() for v in values.values()])
        if self._sums is None or self.names != list(values):
            self.names = list(values)
            self._sums = torch.zeros_like(stacked)
            self._first_bad = torch.full_like(stacked, NEVER, dtype=torch.int64)
            self.count = 0
        self._sums.add_(stacked, alpha=weight)
        self.count += weight
        torch.minimum(self._first_bad, torch.where(torch.isfinite(stacked), NEVER, step), out=self._first_bad)

    def check(self, epoch: int, last_checkpoint: str | Callable[[], str | None] | None = None) -> None:
        """Raise :class:`NonFiniteLossError` if any value (on any rank) has been NaN or infinite.

        The message names the value(s) that went non-finite first (the sums such as ``train/loss`` follow
        their terms), the others after, and ``last_checkpoint``: the good one kept, when there is one (a
        callable is asked only when the check fails, so the step pays nothing for it).
        """
        if self._first_bad is None:
            return
        first_bad = reduced_to_host(self._first_bad, op=dist.ReduceOp.MIN)
        bad = {name: int(step) for name, step in zip(self.names, first_bad, strict=True) if step != NEVER}
        if not bad:
            return
        step = min(bad.values())
        first = [n for n, s in bad.items() if s == step and n not in AGGREGATES] or [
            n for n, s in bad.items() if s == step
        ]
        later = [f"{n} (step {s})" for n, s in bad.items() if n not in first and n not in AGGREGATES]
        if callable(last_checkpoint):
            last_checkpoint = last_checkpoint()
        kept = (
            f"the last good checkpoint is kept ({last_checkpoint})"
            if last_checkpoint
            else "no epoch had finished, so there is no checkpoint to resume from"
        )
        raise NonFiniteLossError(
            f"loss term(s) {', '.join(first)} became NaN/Inf first, at global step {step} (epoch {epoch})"
            + (f"; later also {', '.join(later)}" if later else "")
            + f". The run was stopped and no checkpoint of the broken weights was written; {kept}. "
            "Lower optimizer.lr or the term's weight, check the data for NaN, or use trainer.precision=32-true."
        )

    def means(self) -> dict[str, float]:
        """The epoch's sample-weighted mean of every value (over all ranks); empty before any update."""
        if self._sums is None or self.count == 0:
            return {}
        *sums, count = reduced_to_host(torch.cat([self._sums, self._sums.new_full((1,), float(self.count))]))
        return {name: total / count for name, total in zip(self.names, sums, strict=True)}

    def mean(self, name: str) -> torch.Tensor:
        """The running mean of one value over this rank's epoch so far, on the device (no host read)."""
        if self._sums is None or self.count == 0:
            raise ValueError("LossMeter.mean called before any update")
        return self._sums[self.names.index(name)] / self.count

    def reset(self) -> None:
        """Start a new epoch's sums; the non-finite record is kept (a broken run stays broken)."""
        if self._sums is not None:
            self._sums.zero_()
        self.count = 0

"""Watching the loss terms for NaN/Inf without a host sync per step."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pckd_lightning.errors import PCKDError


class NonFiniteLossError(PCKDError, FloatingPointError):
    """A loss term became NaN or infinite; the run stops before any checkpoint of broken weights."""


class NonFiniteMonitor:
    """Records, on the device, which terms went non-finite and at which step first.

    :meth:`update` is called every step and never reads a value back to the host; :meth:`check`
    does (once every few steps, and before anything is checkpointed) and raises with the term names,
    the step and the epoch.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._bad: torch.Tensor | None = None
        self._first_step: torch.Tensor | None = None

    def update(self, losses: Mapping[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.detach().float() for v in losses.values()])
        bad = ~torch.isfinite(values)
        if self._bad is None or self.names != list(losses):
            self.names = list(losses)
            self._bad = torch.zeros_like(bad)
            self._first_step = torch.full((), -1, dtype=torch.long, device=bad.device)
        newly_bad = bad.any() & (self._first_step < 0)
        self._first_step = torch.where(newly_bad, torch.full_like(self._first_step, step), self._first_step)
        self._bad = self._bad | bad

    def check(self, epoch: int) -> None:
        if self._bad is None or not bool(self._bad.any()):
            return
        terms = [name for name, bad in zip(self.names, self._bad.tolist(), strict=True) if bad]
        raise NonFiniteLossError(
            f"loss term(s) {', '.join(terms)} became NaN/Inf at global step {int(self._first_step)} (epoch {epoch}); "
            "the run was stopped and no checkpoint of the broken weights was written (the last good one is kept). "
            "Lower optimizer.lr or the term's weight, check the data for NaN, or use trainer.precision=32-true."
        )

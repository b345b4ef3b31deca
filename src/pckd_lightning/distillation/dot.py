"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023): one momentum per loss part.

SGD keeps two momentum buffers for each parameter: one for the task-loss gradient (momentum ``μ − Δ``) and
one for the distillation gradient (momentum ``μ + Δ``), and steps with their sum, so the distillation
direction dominates once the two disagree. The reference (megvii-research/mdistiller
``mdistiller/engine/dot.py``) runs two backward passes and so needs DataParallel. Here the task gradient
is taken with ``torch.autograd.grad`` from the step's graph (kept for the ordinary backward), averaged over
the DDP ranks in one all-reduce, and the distillation gradient is what the ordinary backward adds to it:
``g_kd = p.grad − g_task``. Under DDP ``p.grad`` is already the ranks' average, so every rank steps as one
process on the global batch would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from pckd_lightning.distillation.module import DistillationModule
from pckd_lightning.distributed import world_size
from pckd_lightning.errors import ConfigError
from pckd_lightning.schema.fields import Number, require


class DistillationOrientedSGD(torch.optim.Optimizer):
    """SGD with separate momenta for the task and the distillation gradients (DOT).

    Before each :meth:`step`, :meth:`add_task_gradients` must have been given the task part of the
    gradient (the :class:`DOTGradientSplit` callback does it); ``p.grad`` holds the whole gradient.
    Weight decay goes with the task part. A parameter without a task gradient (a distillation head) uses
    the mean of the two momenta, as the reference does for parameters reached by one loss only.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.825,
        momentum_kd: float = 0.975,
        weight_decay: float = 0.0,
    ) -> None:
        for name, value, high in (
            ("lr", lr, None),
            ("momentum", momentum, 1),
            ("momentum_kd", momentum_kd, 1),
        ):
            require(Number(0), value, "DistillationOrientedSGD", name)
            if high is not None and value >= high:
                raise ConfigError(f"DistillationOrientedSGD: {name} must be < 1, got {value!r}")
        if weight_decay < 0:
            raise ConfigError(f"DistillationOrientedSGD: weight_decay must be >= 0, got {weight_decay!r}")
        defaults = {"lr": lr, "momentum": momentum, "momentum_kd": momentum_kd, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def add_task_gradients(
        self, params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]
    ) -> None:
        """Add the task part of the gradient (summed over micro-batches until the next step)."""
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            state = self.state[p]
            state["task_grad"] = g.detach().clone() if "task_grad" not in state else state["task_grad"] + g

    @staticmethod
    def _momentum(state: dict, key: str, d_p: torch.Tensor, momentum: float) -> torch.Tensor:
        if key not in state:
            state[key] = d_p.clone()  # the first step takes the gradient itself, as torch's SGD
        else:
            state[key].mul_(momentum).add_(d_p)
        return state[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            mu_task, mu_kd = group["momentum"], group["momentum_kd"]
            for p in group["params"]:
                state = self.state[p]
                task = state.pop("task_grad", None)
                if p.grad is None:
                    continue
                if task is None:  # reached by the distillation loss only
                    d_p = p.grad.add(p, alpha=wd) if wd else p.grad
                    update = self._momentum(state, "momentum_buffer", d_p, (mu_task + mu_kd) / 2)
                else:
                    kd = p.grad - task
                    d_task = task.add(p, alpha=wd) if wd else task
                    update = self._momentum(state, "momentum_buffer", d_task, mu_task) + self._momentum(
                        state, "momentum_kd_buffer", kd, mu_kd
                    )
                p.add_(update, alpha=-lr)
        return loss


def task_gradients(task_loss: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor | None]:
    """``∂ task_loss / ∂ params`` from the step's graph (kept), averaged over the DDP ranks (one all-reduce)."""
    grads = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
    if world_size() > 1:
        present = [g for g in grads if g is not None]
        flat = torch.cat([g.reshape(-1) for g in present]) if present else task_loss.new_zeros(0)
        dist.all_reduce(flat)
        flat /= world_size()
        out, offset = [], 0
        for g in grads:
            if g is None:
                out.append(None)
                continue
            out.append(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return out
    return list(grads)


class DOTGradientSplit(L.Callback):
    """Trains with :class:`DistillationOrientedSGD` and hands it the task part (``task_terms``) of each gradient.

    In ``setup`` it registers two seams with the DistillationModule: :meth:`dot_optimizer`, which turns the
    configured SGD (``optimizer=sgd``: lr, momentum μ, weight decay) into DOT with momenta ``μ − delta``
    (task) and ``μ + delta`` (distillation), and :meth:`take_losses`, which receives each training step's
    per-term losses. Just before Lightning's backward it takes the gradient of their task part. A parameter
    that receives no task gradient (a head of a distillation term) is stepped as the reference steps such
    parameters.
    """

    def __init__(self, delta: float = 0.075, task_terms: Sequence[str] = ("ce",)) -> None:
        self.delta = float(require(Number(0), delta, "DOTGradientSplit", "delta"))
        if isinstance(task_terms, str) or not task_terms:
            raise ConfigError(
                f"DOTGradientSplit: task_terms must be a non-empty list of term names, got {task_terms!r}"
            )
        self.task_terms = tuple(task_terms)
        self._losses: Mapping[str, torch.Tensor] | None = None  # the current step's, until its backward

    def setup(self, trainer: L.Trainer, pl_module: DistillationModule, stage: str) -> None:
        """Before ``configure_optimizers`` and the first step: DOT's optimizer and the step's losses."""
        pl_module.wrap_optimizer(self.dot_optimizer)
        pl_module.add_loss_listener(self.take_losses)

    def dot_optimizer(self, configured: torch.optim.Optimizer) -> DistillationOrientedSGD:
        """DOT with the configured SGD's parameters, lr and weight decay, and its momentum split by ``delta``."""
        if not isinstance(configured, torch.optim.SGD) or not configured.defaults["momentum"]:
            raise ConfigError(
                f"DOT builds on SGD with momentum (optimizer=sgd), got {configured!r}; select optimizer=sgd"
            )
        options = dict(configured.defaults)
        momentum = options.pop("momentum")
        if not self.delta <= momentum < 1 - self.delta:
            raise ConfigError(
                f"DOT needs 0 <= momentum - delta and momentum + delta < 1, got momentum={momentum}, "
                f"delta={self.delta}; set distill.callbacks.dot.delta (0.075 published)"
            )
        sgd_defaults = inspect.signature(torch.optim.SGD).parameters
        unsupported = [
            k for k, v in options.items() if k not in ("lr", "weight_decay") and v != sgd_defaults[k].default
        ]
        if unsupported:
            raise ConfigError(
                f"DOT supports SGD's lr, momentum and weight_decay only, got {sorted(unsupported)}"
            )
        return DistillationOrientedSGD(
            [p for group in configured.param_groups for p in group["params"]],
            lr=options["lr"],
            momentum=momentum - self.delta,
            momentum_kd=momentum + self.delta,
            weight_decay=options["weight_decay"],
        )

    def take_losses(self, losses: Mapping[str, torch.Tensor]) -> None:
        """The training step's per-term losses, kept until its backward."""
        self._losses = losses

    def on_fit_start(self, trainer: L.Trainer, pl_module: DistillationModule) -> None:
        optimizers = trainer.optimizers
        if len(optimizers) != 1 or not isinstance(optimizers[0], DistillationOrientedSGD):
            raise ConfigError(
                "DOT's optimizer was replaced after setup; use optimizer=sgd with distill=kd_dot or dkd_dot"
            )
        if str(trainer.precision) == "16-mixed":
            raise ConfigError(
                "DOT takes the task gradient of the unscaled loss, which float16's loss scaling would not match; "
                "use trainer.precision=bf16-mixed or 32-true"
            )
        if getattr(trainer, "gradient_clip_val", None):
            raise ConfigError(
                "DOT splits the gradient before Lightning clips it, so clipping would break the split; "
                "set trainer.gradient_clip_val=null"
            )
        unknown = [name for name in self.task_terms if name not in pl_module.terms]
        if unknown:
            raise ConfigError(
                f"DOT task_terms {unknown} are not terms of this run ({list(pl_module.terms)}); "
                "set distill.callbacks.dot.task_terms to the supervised terms (e.g. [ce])"
            )

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: DistillationModule, loss: torch.Tensor
    ) -> None:
        losses, self._losses = self._losses, None  # the graph is not kept past the backward
        if losses is None:
            raise RuntimeError(
                "DOTGradientSplit saw no losses for this step: training_step did not hand them to take_losses"
            )
        weighted = pl_module.step.weighted({name: losses[name] for name in self.task_terms})
        task = sum(weighted.values())
        task = task / trainer.accumulate_grad_batches  # as Lightning scales the loss it back-propagates
        optimizer = trainer.optimizers[0]
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        optimizer.add_task_gradients(params, task_gradients(task, params))

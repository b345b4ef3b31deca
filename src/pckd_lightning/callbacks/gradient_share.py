"""How much each loss term pulls on the student: per-term gradient norms and their agreement with CE.

A weight makes a term large or small in the loss, but what moves the student is its gradient: a term
whose gradient is 20 times CE's (PCKD's feature alignment in epoch 1) or orthogonal to it tells more than
its loss value. This callback measures that, on the side, without changing the training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import nn

from pckd_lightning.distributed import reduced_to_host, world_size
from pckd_lightning.schema.fields import Int, require

#: the supervised term the others' gradient directions are compared with
REFERENCE_TERM = "ce"
_PLAIN = (bool, int, float, str, type(None))


class GradientShare(L.Callback):
    """Every ``every_n_steps`` optimizer steps, per loss term: ``grad/<term>/norm`` (L2 norm of the gradient
    of ``weight · loss`` on the student's parameters), ``grad/<term>/head_norm`` (the same on the terms'
    heads) and ``grad/<term>/cos_ce`` (cosine of its student gradient with CE's), logged to every logger.

    ``every_n_steps=0`` switches it off. It measures before the step, on the step's batch and parameters,
    with a second forward pass and one backward pass per term (``torch.autograd.grad``, so no ``.grad`` is
    touched); buffers (BatchNorm statistics, CRD's memory), plain attributes of the modules and the random
    generators are restored afterwards and the batch stays out of the preview statistics, so the step that follows computes
    exactly what it would have computed unmonitored. Off-steps cost one integer comparison. A measured
    step costs about one training step per term (README: the measured cost). Under DDP each rank measures
    its own batch and the values logged are the ranks' means.
    """

    def __init__(self, every_n_steps: int = 0) -> None:
        self.every_n_steps = require(
            Int(0),
            every_n_steps,
            "GradientShare",
            "every_n_steps",
            note=" (0 switches it off; e.g. 50)",
            fix="; set callbacks.gradient_share.every_n_steps",
        )
        #: the values of the latest measurement, as logged
        self.last: dict[str, float] = {}
        #: the latest optimizer step measured (-1 before the first)
        self.measured_step = -1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or step == self.measured_step:
            return
        self.measured_step = step  # once per optimizer step, also with gradient accumulation
        with trainer.precision_plugin.forward_context():
            self.last = self.measure(pl_module, batch)
        for logger in trainer.loggers:
            logger.log_metrics(self.last, step=step)

    def measure(self, pl_module: L.LightningModule, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        """The logged values for ``batch`` at the current parameters, averaged over the ranks."""
        step = pl_module.step
        student = [p for p in step.student.parameters() if p.requires_grad]
        heads = [p for p in step.terms.parameters() if p.requires_grad]
        with _unchanged(pl_module), torch.enable_grad():
            losses = step.losses(step.context(batch), record=False)  # out of the preview statistics
            names = sorted(losses, key=lambda name: name != REFERENCE_TERM)  # CE first: the others' reference
            reference: list[torch.Tensor] | None = None
            reference_norm = torch.zeros(())
            rows = []
            weighted_losses = step.weighted(losses)
            for i, name in enumerate(names):
                weighted = weighted_losses[name]
                grads = torch.autograd.grad(
                    weighted, student + heads, retain_graph=i < len(names) - 1, allow_unused=True
                )
                on_student = [_dense(g, p) for g, p in zip(grads[: len(student)], student, strict=True)]
                norm = _norm(on_student)
                row = [norm, _norm([g for g in grads[len(student) :] if g is not None])]
                if name == REFERENCE_TERM:
                    reference, reference_norm = on_student, norm
                if reference is not None:
                    dot = sum(
                        (g.float() * r.float()).sum() for g, r in zip(on_student, reference, strict=True)
                    )
                    row.append(dot / (norm * reference_norm).clamp(min=torch.finfo(torch.float32).tiny))
                rows.append(torch.stack([torch.as_tensor(v, device=norm.device) for v in row]))
        values = reduced_to_host(torch.cat(rows))
        out, k = {}, 0
        for name, row in zip(names, rows, strict=True):
            keys = ["norm", "head_norm", "cos_ce"][: row.numel()]
            for key in keys:
                out[f"grad/{name}/{key}"] = values[k] / world_size()
                k += 1
        return out


def _dense(grad: torch.Tensor | None, param: nn.Parameter) -> torch.Tensor:
    return torch.zeros_like(param) if grad is None else grad


def _norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if not grads:
        return torch.zeros(())
    return torch.sqrt(sum(g.float().square().sum() for g in grads))


@contextmanager
def _unchanged(pl_module: L.LightningModule) -> Iterator[None]:
    """Restore what a forward pass changes: buffers, plain attributes and the random generators."""
    modules = [m for name, m in pl_module.named_modules() if name.split(".")[0] != "teacher"]  # frozen
    buffers = [(b, b.clone()) for m in modules for b in m.buffers(recurse=False)]
    attributes = [(m, {k: v for k, v in vars(m).items() if isinstance(v, _PLAIN)}) for m in modules]
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, saved in attributes:
            vars(module).update(saved)

"""The whole training step as one pure function: forward passes, the loss, its gradient and the SGD update.

``.backward()`` and ``optimizer.step()`` split a step into pieces that torch.compile traces apart (the
backward is a graph break). Here the student's and the heads' parameters are arguments: ``torch.func``
takes the gradient of :class:`~pckd_lightning.distillation.step.DistillStep`'s total with respect to them
and the SGD update is arithmetic on tensors, so ``torch.compile(fullgraph=True)`` traces the step as one
graph, the condition for replaying it as one CUDA graph.
"""

from __future__ import annotations

import torch
from torch import nn

from pckd_lightning.distillation.step import DistillStep
from pckd_lightning.errors import ConfigError

#: parameters, buffers or momenta, by their names under :class:`Trainable`
Tensors = dict[str, torch.Tensor]


class Trainable(nn.Module):
    """The student and the terms under one module, so that ``functional_call`` swaps the parameters the
    step reads (the step reads the same student and terms)."""

    def __init__(self, step: DistillStep) -> None:
        super().__init__()
        self.student = step.student
        self.terms = step.terms
        self.step = [step]  # a list: not a submodule, so its parts are not registered twice

    def forward(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Tensors]:
        """The total, each term's value and, with preview weights, ``difficulty``: view 0's per-image
        cross-entropy, from which :meth:`CapturedStep.record` records the weights' epoch statistics."""
        step = self.step[0]
        ctx = step.context(batch)
        losses = step.losses(ctx, record=False)
        weighted = step.preview is not None and bool(step.preview_terms)
        preview = {"difficulty": ctx.first_view().cross_entropy.detach()} if weighted else {}
        return step.total(losses), losses, preview


class CapturedStep:
    """One SGD step of ``step`` as a function of the parameters, buffers and momenta, the batch and the lr.

    ``optimizer`` gives the parameters (in its one group: the student's and the trainable heads') and the
    SGD settings (momentum, weight decay, Nesterov); the step computes what ``total.backward()`` and
    ``optimizer.step()`` do. Buffers (BatchNorm's running statistics, CRD's memory banks) are the modules'
    own tensors, handed in as ``fixed`` and updated in place, as in the eager step. ``lr`` is a tensor, so
    that a scheduler changing it does not retrace. Momenta start at zero, which equals torch's first step
    (the momentum is the gradient itself) only without dampening: other settings are refused. Build it
    after the module's ``setup`` (which may replace the student's BatchNorm layers).
    """

    def __init__(self, step: DistillStep, optimizer: torch.optim.Optimizer) -> None:
        if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
            raise ConfigError(
                "a captured step computes torch.optim.SGD with one parameter group, got "
                f"{type(optimizer).__name__} with {len(optimizer.param_groups)}"
            )
        if step.teacher_cache is not None:
            raise ConfigError(
                "a captured step runs the teacher: its cache reads the batch's indices on the host"
            )
        group = optimizer.param_groups[0]
        if group["dampening"] != 0 or group["maximize"]:
            raise ConfigError("a captured step computes SGD without dampening and without maximize")
        #: the lr the optimizer starts with (the step takes it as a tensor argument)
        self.lr: float = group["lr"]
        self.momentum: float = group["momentum"]
        self.weight_decay: float = group["weight_decay"]
        self.nesterov: bool = group["nesterov"]
        self.trainable = Trainable(step)
        names = {id(p): name for name, p in self.trainable.named_parameters()}
        self.names = [names[id(p)] for p in group["params"]]

    def parameters(self) -> Tensors:
        """The trainable parameters now, by name (detached: the step takes their gradient itself)."""
        params = dict(self.trainable.named_parameters())
        return {name: params[name].detach() for name in self.names}

    def fixed(self) -> Tensors:
        """What the step reads but does not train, by name: the buffers and the frozen heads' parameters
        (handed to the gradient as arguments: it refuses in-place updates of tensors it did not get)."""
        trained = set(self.names)
        named = [*self.trainable.named_parameters(), *self.trainable.named_buffers()]
        return {name: t.detach() for name, t in named if name not in trained}

    def zero_momenta(self) -> Tensors:
        """The momenta before the first step."""
        return {name: torch.zeros_like(p) for name, p in self.parameters().items()}

    def __call__(
        self,
        params: Tensors,
        fixed: Tensors,
        momenta: Tensors,
        batch: tuple[torch.Tensor, ...],
        lr: torch.Tensor,
    ) -> tuple[Tensors, Tensors, dict[str, torch.Tensor], Tensors]:
        """The parameters and momenta after one step on ``batch``, each term's value (``loss``: the total)
        and what :meth:`record` takes; the buffers in ``fixed`` are updated in place."""

        def loss(trained: Tensors, fixed: Tensors) -> tuple[torch.Tensor, tuple[Tensors, Tensors]]:
            total, losses, preview = torch.func.functional_call(self.trainable, (trained, fixed), (batch,))
            return total, ({**{k: v.detach() for k, v in losses.items()}, "loss": total.detach()}, preview)

        grads, (_, (losses, preview)) = torch.func.grad_and_value(loss, has_aux=True)(params, fixed)
        new_params, new_momenta = {}, {}
        for name, p in params.items():
            d_p = grads[name] if self.weight_decay == 0 else grads[name] + self.weight_decay * p
            if self.momentum != 0:
                new_momenta[name] = self.momentum * momenta[name] + d_p
                d_p = d_p + self.momentum * new_momenta[name] if self.nesterov else new_momenta[name]
            else:
                new_momenta[name] = momenta[name]
            new_params[name] = p - lr * d_p
        return new_params, new_momenta, losses, preview

    def record(self, preview: Tensors) -> None:
        """Add a step's images to the preview weights' epoch statistics, as the eager step does. Outside
        the step: they are summed in Python attributes, which a graph would be retraced for at each step."""
        if preview:
            self.trainable.step[0].preview(preview["difficulty"])

    def load(self, params: Tensors) -> None:
        """Write ``params`` into the modules' parameters (what ``optimizer.step()`` leaves there)."""
        current = dict(self.trainable.named_parameters())
        with torch.no_grad():
            for name, value in params.items():
                current[name].copy_(value)

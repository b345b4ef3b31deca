"""Process bodies for the DOT DDP test (a module of its own, which the ranks import)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.distillation.dot import DistillationOrientedSGD, task_gradients
from pckd_lightning.losses import CrossEntropyTerm, KDTerm
from pckd_lightning.models import create_model

NUM_CLASSES = 4


def kd_module() -> DistillationModule:
    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", num_classes=NUM_CLASSES),
        teacher=create_model("resnet8", num_classes=NUM_CLASSES),
        terms={"ce": CrossEntropyTerm(weight=0.1), "kd": KDTerm(weight=0.9)},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=NUM_CLASSES,
        sync_batchnorm=True,
        teacher_options=TeacherOptions(measure=False),
    )
    module.setup("fit")  # global BatchNorm statistics when world > 1
    return module


class Losses(nn.Module):
    """The step's total loss and its task (CE) part, as a forward DDP can wrap."""

    def __init__(self, module: DistillationModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch):
        _, losses, total = self.module.step(batch)
        return total, self.module.terms["ce"].weight * losses["ce"]


def batch(step: int, num_images: int = 16):
    g = torch.Generator().manual_seed(10 + step)
    x = torch.randn(num_images, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (num_images,), generator=g)
    return x, y, torch.arange(num_images)


def dot_steps(rank: int, world: int, init: str, out: str, steps: int = 2) -> None:
    """``steps`` DOT updates; rank r takes its share of each fixed batch; rank 0 saves the student."""
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    module = kd_module()
    params = module.trainable_parameters()
    optimizer = DistillationOrientedSGD(params, lr=0.1, momentum=0.825, momentum_kd=0.975, weight_decay=5e-4)
    model = Losses(module)
    if world > 1:
        model = DistributedDataParallel(model)
    for step in range(steps):
        x, y, idx = batch(step)
        share = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        optimizer.zero_grad()
        total, task = model((x[share], y[share], idx[share]))
        optimizer.add_task_gradients(params, task_gradients(task, params))
        total.backward()
        optimizer.step()
    if rank == 0:
        torch.save({n: p.detach().clone() for n, p in module.student.named_parameters()}, Path(out))
    if world > 1:
        dist.destroy_process_group()

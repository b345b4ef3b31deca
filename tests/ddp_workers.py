"""Process bodies for the DDP tests (a module of its own, which the ranks import)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pckd_lightning.distillation import DistillationModule, Performance
from pckd_lightning.distributed import convert_batchnorm
from pckd_lightning.losses import (
    CategoryContrastTerm,
    CenterAlignTerm,
    CrossEntropyTerm,
    FeatureAlignTerm,
    KDTerm,
)
from pckd_lightning.losses.terms.crd import CRDTerm
from pckd_lightning.models import create_model
from pckd_lightning.preview import PreviewWeighting, PreviewWeights

NUM_CLASSES = 4


#: a timm pair: a ViT teacher for the 16x16 batch, a timm CNN student (its BatchNormAct2d layers)
TIMM_PAIR = (
    ("timm:test_efficientnet", {}),
    (
        "timm:vit_tiny_patch16_224",
        {"kwargs": {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}},
    ),
)


def pckd_module(world: int, compile_losses: bool = False, timm_pair: bool = False) -> DistillationModule:
    torch.manual_seed(0)
    (student, s_options), (teacher, t_options) = (
        TIMM_PAIR if timm_pair else (("resnet8", {}), ("resnet8", {}))
    )
    module = DistillationModule(
        student=create_model(student, num_classes=NUM_CLASSES, **s_options),
        teacher=create_model(teacher, num_classes=NUM_CLASSES, **t_options),
        terms={
            "ce": CrossEntropyTerm(),
            "kd": KDTerm(preview=True),
            "category_contrast": CategoryContrastTerm(preview=True),
            "center_align": CenterAlignTerm(),
            "feature_align": FeatureAlignTerm(hidden_factor=2),
        },
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=NUM_CLASSES,
        preview=PreviewWeights(),
        sync_batchnorm=True,
        performance=Performance(compile_losses=compile_losses),
    )
    module.setup("fit")  # converts BatchNorm to global statistics when world > 1, compiles the terms
    return module


def fixed_batch(num_images: int = 16, views: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(num_images, views, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (num_images,), generator=g)
    return x, y, torch.arange(num_images)


class TotalLoss(nn.Module):
    """What the training step optimizes, as a forward DDP can wrap."""

    def __init__(self, module: DistillationModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.step(batch)[2]


def gradients(module: DistillationModule) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def first_step_gradients(
    rank: int, world: int, init: str, out: str, compile_losses: bool = False, timm_pair: bool = False
) -> None:
    """Rank r of ``world`` takes images [r·B/world, (r+1)·B/world) of the fixed batch; saves rank 0's grads."""
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    module = pckd_module(world, compile_losses, timm_pair)
    x, y, idx = fixed_batch()
    share = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    model = TotalLoss(module)
    if world > 1:
        model = DistributedDataParallel(model)
    model((x[share], y[share], idx[share])).backward()
    if rank == 0:
        torch.save(gradients(module), Path(out))
    if world > 1:
        dist.destroy_process_group()


def bf16_global_batchnorm(rank: int, world: int, init: str, out: str) -> None:
    """Rank r normalizes its share of a fixed bf16 batch under bf16 autocast; rank 0 saves what it got."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    x = bf16_batch()
    share = x[rank * len(x) // world : (rank + 1) * len(x) // world].requires_grad_()
    norm = convert_batchnorm(nn.BatchNorm2d(x.shape[1])).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(share)
    y.float().square().sum().backward()
    if rank == 0:
        torch.save({"out": y.detach(), "grad": share.grad, **norm.state_dict()}, Path(out))
    dist.destroy_process_group()


def bf16_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return (torch.randn(8, 3, 4, 4, generator=g) * 3 + 1).bfloat16()


def crd_module() -> DistillationModule:
    """CE + CRD on a 64-image bank (the banks' initial values come from the current torch seed)."""
    return DistillationModule(
        student=create_model("resnet8", num_classes=NUM_CLASSES),
        teacher=create_model("resnet8", num_classes=NUM_CLASSES),
        terms={"ce": CrossEntropyTerm(), "crd": CRDTerm(num_data=64, nce_k=16)},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=NUM_CLASSES,
        train_labels=torch.arange(64) % NUM_CLASSES,
    )


def crd_banks(rank: int, world: int, init: str, out: str) -> None:
    """A few CRD steps on different images per rank; each rank saves its banks."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial weights and banks on every rank
    module = crd_module()
    torch.manual_seed(rank)  # different negatives per rank, as in a real run
    # no buffer broadcast: the banks must stay identical through the gathered updates alone
    model = DistributedDataParallel(TotalLoss(module), broadcast_buffers=False)
    optimizer = torch.optim.SGD(module.trainable_parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        idx = torch.randperm(64, generator=g)[:4]
        x = torch.randn(4, 3, 16, 16, generator=g)
        optimizer.zero_grad()
        model((x, idx % NUM_CLASSES, idx)).backward()
        optimizer.step()
    crd = module.terms["crd"]
    torch.save({"student": crd.memory_student, "teacher": crd.memory_teacher}, Path(out) / f"banks{rank}.pt")
    dist.destroy_process_group()


def crd_fresh_banks() -> dict[str, torch.Tensor]:
    """The banks ``crd_banks`` starts from, before any step."""
    torch.manual_seed(0)
    module = crd_module()
    crd = module.terms["crd"]
    return {"student": crd.memory_student.clone(), "teacher": crd.memory_teacher.clone()}


def loss_meter(rank: int, world: int, init: str, out: str) -> None:
    """Different values and sample counts per rank, a NaN on rank 1 only; saves each rank's view."""
    import json

    from pckd_lightning.distillation.loss_meter import LossMeter, NonFiniteLossError

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    meter = LossMeter()
    kd, weight = (1.0, 2) if rank == 0 else (4.0, 6)
    meter.update({"ce": torch.tensor(1.0), "kd": torch.tensor(kd)}, weight=weight, step=2)
    means = meter.means()
    ce = float("nan") if rank == 1 else 1.0
    meter.update({"ce": torch.tensor(ce), "kd": torch.tensor(kd)}, weight=weight, step=3)
    try:
        meter.check(epoch=0)
        error = None
    except NonFiniteLossError as err:
        error = str(err)
    (Path(out) / f"meter{rank}.json").write_text(json.dumps({"means": means, "error": error}))
    dist.destroy_process_group()


def preview_statistics(rank: int, world: int, init: str, out: str) -> None:
    """Different difficulties and sample counts per rank; saves what each rank logs at the epoch's end."""
    import json
    from types import SimpleNamespace

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    preview = PreviewWeights(base=1.5)  # threshold 1.5 in epoch 1
    # the global batch (both ranks, 9 images) has mean CE 1, so γ = CE; rank 1 alone has mean 0.92
    ce = torch.tensor([0.5, 0.5, 2.5]) if rank == 0 else torch.tensor([0.25, 0.25, 0.5, 0.25, 0.25, 4.0])
    preview(ce)
    logged = {}
    module = SimpleNamespace(
        log=lambda name, value: logged.__setitem__(name, value), step=SimpleNamespace(preview=preview)
    )
    PreviewWeighting().on_train_epoch_end(SimpleNamespace(loggers=[]), module)
    (Path(out) / f"preview{rank}.json").write_text(json.dumps(logged))
    dist.destroy_process_group()

"""Helpers shared by the baseline loss terms: feature shapes, spatial matching, option checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pckd_lightning.errors import ConfigError
from pckd_lightning.models.base import ZooModel
from pckd_lightning.modes import eval_mode
from pckd_lightning.schema.fields import Int, Number, accepts, require


@dataclass(frozen=True)
class FeatureShapes:
    """Per-sample shapes of a model's features: ``stages`` as (C, H, W), then the pooled size."""

    stages: list[tuple[int, int, int]]
    pooled: int


@torch.no_grad()
def probe_shapes(model: ZooModel, input_size: int) -> FeatureShapes:
    """Run ``model`` once on a zero image of ``input_size``² to read its feature shapes.

    Every submodule's train/eval flag is restored afterwards (BatchNorm statistics are not touched:
    the probe runs in eval mode).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    with eval_mode(model):
        out = model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype), with_features=True)
    return FeatureShapes(
        stages=[(s.shape[1], s.shape[2], s.shape[3]) for s in out.stages],
        pooled=out.pooled.shape[1],
    )


def check_input_size(term: str, input_size: object) -> int:
    if not accepts(Int(1), input_size):
        raise ConfigError(
            f"{term}: input_size must be a positive int (the training image side, 32 for CIFAR), "
            f"got {input_size!r}; set distill.terms.<name>.input_size"
        )
    return input_size


def check_positive(term: str, option: str, value: object, allow_zero: bool = False) -> float:
    return float(require(Number(0, low_open=not allow_zero), value, term, option))


def check_count(term: str, option: str, value: object, minimum: int = 0) -> int:
    return require(Int(minimum), value, term, option)


def match_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps to the other's spatial size (CRD-benchmark rule)."""
    (hs, ws), (ht, wt) = f_s.shape[2:], f_t.shape[2:]
    if (hs, ws) == (ht, wt):
        return f_s, f_t
    size = (min(hs, ht), min(ws, wt))
    if (hs, ws) != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if (ht, wt) != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return f_s, f_t


def full_precision(x: torch.Tensor) -> torch.autocast:
    """Autocast switched off on ``x``'s device: for the pairwise products of a loss formula, whose small
    differences bfloat16 would wipe out, and for heads too small to gain from bfloat16 (the category contrast's)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: [B, ...] -> [B]."""
    return x.flatten(1).mean(dim=1)


def stage_pairs(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> list[tuple]:
    """Pair the stage outputs (the stem excluded) in order, as the CRD benchmark's ``feat[1:-1]``.

    When the two models have different numbers of stages, the first ``min`` stages are paired
    (Python ``zip``, as the reference code does).
    """
    return list(zip(student[1:], teacher[1:], strict=False))

"""How many operations a block of training steps issues: the host's share of a launch-bound GPU step.

With small models on a fast GPU the step waits on the host, which pays a roughly fixed cost per
operation (Python, dispatch, kernel launch) whatever the tensors' sizes. The count is therefore a
machine-independent measure of that cost:

* on CUDA, the GPU kernels and memory operations the block launched (``torch.profiler``);
* on CPU, the ATen operations dispatched, views excluded (views launch nothing on a GPU).

Compiled code on CPU is not counted (a dispatch mode would change what it traces): ``None`` then.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: operations that only re-describe memory (or mark profiler ranges): no kernel on a GPU
VIEW_OPS = frozenset(
    {
        "_record_function_enter_new",
        "_record_function_exit",
        "_reshape_alias",
        "_unsafe_view",
        "alias",
        "as_strided",
        "detach",
        "diagonal",
        "expand",
        "lift_fresh",
        "permute",
        "select",
        "slice",
        "split",
        "squeeze",
        "t",
        "transpose",
        "unbind",
        "unflatten",
        "unsqueeze",
        "view",
    }
)


@dataclass
class OpCount:
    """Filled in when the counting block ends: ``total`` operations, ``by_name`` on CPU."""

    method: str
    total: int | None = None
    by_name: collections.Counter[str] = field(default_factory=collections.Counter)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counts: collections.Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEW_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_ops(device: torch.device, compiled: bool = False) -> Iterator[OpCount]:
    """Count what the block issues on ``device``; read the result after the block."""
    if device.type == "cuda":
        result = OpCount("CUDA kernels and memory operations launched (torch.profiler)")
        activities = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as profiler:
            yield result
            torch.cuda.synchronize(device)
        try:
            events = profiler.events()
            result.total = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        except Exception as err:  # counting must never cost the timing it accompanies
            result.method = f"not counted: {type(err).__name__}: {err}"
        return
    if compiled:
        yield OpCount("not counted: compiled code on CPU")
        return
    result = OpCount("ATen operations dispatched on CPU, views excluded")
    with _DispatchCounter(result.by_name):
        yield result
    result.total = sum(result.by_name.values())

"""The whole training step is one graph (issue 27): every method's forward passes, gradient and SGD update
(each row whose parts no other row traces) trace under torch.compile(fullgraph=True) as one graph, with no break and no recompilation on the next step,
the condition for replaying a step as one CUDA graph; and two captured steps give the eager step's
(DistillStep, ``total.backward()``, torch.optim.SGD) losses, parameters, buffers and preview statistics.
On the CPU, with the ``aot_eager`` backend: AOTAutograd traces and functionalizes the graph as inductor
would receive it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch._dynamo.utils
from torch._dynamo.backends.registry import lookup_backend

from helpers import METHODS, NOT_CAPTURED, method_module
from pckd_lightning.distillation import CapturedStep, DistillationModule
from pckd_lightning.errors import ConfigError


def eager_steps(module: DistillationModule, batch: tuple[torch.Tensor, ...], steps: int) -> list[dict]:
    """Each step's losses (``loss``: the total) of the ordinary step: ``backward`` then ``optimizer.step``."""
    optimizer = module.configure_optimizers()["optimizer"]
    out = []
    for _ in range(steps):
        optimizer.zero_grad()
        _, losses, total = module.step(batch)
        total.backward()
        optimizer.step()
        out.append({**{k: v.detach() for k, v in losses.items()}, "loss": total.detach()})
    return out


def captured_steps(captured: CapturedStep, step, batch: tuple[torch.Tensor, ...], steps: int) -> list[dict]:
    """Each step's losses of ``step`` (``captured``, compiled or not), the parameters written back."""
    momenta, lr = captured.zero_momenta(), torch.tensor(captured.lr)
    out = []
    for _ in range(steps):
        params, momenta, losses, preview = step(captured.parameters(), captured.fixed(), momenta, batch, lr)
        captured.load(params)
        captured.record(preview)
        out.append(losses)
    return out


def assert_same_run(module, batch, run, steps: int = 2) -> None:
    """``run(captured, batch, steps)`` gives the eager steps' losses and leaves the same parameters, buffers
    and preview statistics."""
    preview = module.step.preview
    state = copy.deepcopy(module.state_dict())
    torch.manual_seed(1)  # the same negatives (CRD)
    if preview is not None:
        preview.start_epoch(preview.epoch)  # its statistics afresh
    eager = eager_steps(module, batch, steps)
    eager_state = copy.deepcopy(module.state_dict())
    eager_stats = None if preview is None else preview.epoch_statistics()
    module.load_state_dict(state)
    torch.manual_seed(1)
    if preview is not None:
        preview.start_epoch(preview.epoch)
    captured = run(CapturedStep(module.step, module.configure_optimizers()["optimizer"]), batch, steps)
    torch.testing.assert_close(captured, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dict(module.state_dict()), eager_state, rtol=1e-4, atol=1e-5)
    if preview is not None:
        torch.testing.assert_close(preview.epoch_statistics(), eager_stats)


def compiled_run(graphs: list) -> Callable:
    """Captured steps under torch.compile(fullgraph=True); each graph dynamo makes goes into ``graphs``."""

    def backend(graph: torch.fx.GraphModule, inputs: list) -> Callable:
        graphs.append(graph)
        return lookup_backend("aot_eager")(graph, inputs)

    def run(captured: CapturedStep, batch: tuple[torch.Tensor, ...], steps: int) -> list[dict]:
        return captured_steps(
            captured, torch.compile(captured, fullgraph=True, backend=backend), batch, steps
        )

    return run


#: rows made only of parts another row traces (their step is that row's graph, a term fewer or an option
#: more): ce (in every row), dkd_ls and mlkd_ls (DKD, MLKD and kd_ls's standardization), pckd_wo_kd (PCKD
#: less KD), pckd_warmup (PCKD; a warm-up's weight follows the epoch without retracing, as DKD's does in
#: test_losses_baselines); each traces in about 9 s on the CPU
COVERED_BY_OTHER_ROWS = {"ce", "dkd_ls", "mlkd_ls", "pckd_wo_kd", "pckd_warmup"}
assert set(METHODS) >= COVERED_BY_OTHER_ROWS, "a covered row's config was renamed or removed"


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(METHODS) - COVERED_BY_OTHER_ROWS))
def test_the_whole_step_compiles_as_one_graph_and_gives_the_eager_step(method, one_thread):
    module, batch = method_module(method)
    assert not module.skipped_terms
    if method in NOT_CAPTURED:
        with pytest.raises(ConfigError, match=r"torch\.optim\.SGD"):
            CapturedStep(module.step, module.configure_optimizers()["optimizer"])
        return
    torch.compiler.reset()
    torch._dynamo.utils.counters.clear()
    graphs = []
    assert_same_run(module, batch, compiled_run(graphs))
    assert len(graphs) == 1  # one graph for both steps: no break, no recompilation
    assert not torch._dynamo.utils.counters["graph_break"]


@pytest.mark.parametrize(
    "sgd",
    [{}, {"nesterov": True}, {"momentum": 0.0}, {"weight_decay": 0.0}],
    ids=["sgd", "nesterov", "plain", "no_wd"],
)
def test_the_captured_update_is_torchs_sgd(sgd, one_thread):
    """The update arithmetic, uncompiled: each of SGD's settings the captured step supports."""
    module, batch = method_module("kd", **sgd)
    assert_same_run(
        module, batch, lambda captured, batch, steps: captured_steps(captured, captured, batch, steps)
    )


def test_sgd_settings_the_captured_step_does_not_compute_are_refused():
    module, _ = method_module("ce", dampening=0.5)
    with pytest.raises(ConfigError, match="dampening"):
        CapturedStep(module.step, module.configure_optimizers()["optimizer"])

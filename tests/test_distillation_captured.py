"""The whole training step is one graph (issue 27): every method's forward passes, gradient and SGD update
trace under torch.compile(fullgraph=True) as one graph, with no break and no recompilation on the next step,
the condition for replaying a step as one CUDA graph; and two captured steps give the eager step's
(DistillStep, ``total.backward()``, torch.optim.SGD) losses, parameters, buffers and preview statistics.
On the CPU, with the ``aot_eager`` backend: AOTAutograd traces and functionalizes the graph as inductor
would receive it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch._dynamo.utils
from torch._dynamo.backends.registry import lookup_backend

from helpers import CONF_DIR, NOT_CAPTURED, compose_config
from pckd_lightning.distillation import CapturedStep, DistillationModule
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.terms.base import InitStageTerm
from pckd_lightning.models import create_model
from pckd_lightning.run.build import build_terms, instantiate

METHODS = sorted(p.stem for p in (CONF_DIR / "distill").glob("*.yaml"))


def method_module(method: str, **sgd: float | bool) -> tuple[DistillationModule, tuple[torch.Tensor, ...]]:
    """``method`` on a tiny pair (resnet8 → resnet8, 8x8 images: few operations to trace), its callbacks set
    up, its configured optimizer (conf/optimizer/sgd.yaml, ``sgd`` overriding), and a batch of 4."""
    cfg = compose_config([f"distill={method}", "data.image_size=8"])
    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", num_classes=10),
        teacher=create_model("resnet8", num_classes=10),
        terms=build_terms(cfg.distill),
        optimizer=partial(instantiate(cfg.optimizer), **sgd),
        num_classes=10,
        train_labels=torch.arange(64) % 10,
        preview=None if cfg.distill.get("preview") is None else instantiate(cfg.distill.preview),
    )
    for callback in (cfg.distill.get("callbacks") or {}).values():
        instantiate(callback).setup(None, module, "fit")  # DOT registers its optimizer here
    if module.step.preview is not None:
        module.step.preview.set_max_epochs(10)
    for term in module.terms.values():
        if isinstance(term, InitStageTerm):  # AB, FSP, FT: the main step, as after their init stage
            term.mark_initialized()
        term.on_train_epoch_start(2)
    views = cfg.distill.views
    shape = (4, views, 3, 8, 8) if views > 1 else (4, 3, 8, 8)
    module.train()
    module.step((torch.randn(shape), torch.arange(4), torch.arange(4)))  # CRD's first-step host checks
    return module, (torch.randn(shape), torch.arange(4) % 10, torch.arange(4, 8))


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


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
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

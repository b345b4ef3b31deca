"""The loss path is one graph: torch.compile traces context, every term and the weighted sum without a
break (what a CUDA-graph capture of the step needs), and the traced path gives the eager values (issue 14).
Every other method's loss path (or, for a row made of other rows' parts, theirs) is traced inside its whole
captured step (test_distillation_captured); here the methods whose step CapturedStep refuses (their optimizer)."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import NOT_CAPTURED, method_module

METHODS = sorted(NOT_CAPTURED)


def loss_path(method: str):
    """The step's loss path of ``method`` on a tiny pair (helpers.method_module), and a batch for it."""
    module, batch = method_module(method)

    def step_loss(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return module.step((images, labels, indices))[2]

    return module, step_loss, batch


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_loss_path_compiles_without_graph_breaks_and_gives_the_eager_value(method, one_thread):
    module, step_loss, batch = loss_path(method)
    state = copy.deepcopy(module.state_dict())  # the compiled step starts from the eager step's state
    torch.manual_seed(1)
    eager = step_loss(*batch)
    module.load_state_dict(state)
    torch.manual_seed(1)
    torch.compiler.reset()
    # fullgraph: a graph break is an error that names it (backend "eager": traced by dynamo, run by aten)
    compiled = torch.compile(step_loss, fullgraph=True, backend="eager")(*batch)
    assert torch.isfinite(eager)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)

"""The loss path is one graph: torch.compile traces context, every term and the weighted sum without a
break (what a CUDA-graph capture of the step needs), and the traced path gives the eager values (issue 14).
Every other method's loss path is traced inside its whole captured step (test_distillation_captured); here
the methods whose step CapturedStep refuses (their optimizer), so each method's loss path is proven once."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from helpers import NOT_CAPTURED, compose_config
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.models import create_model
from pckd_lightning.run.build import build_terms, instantiate

METHODS = sorted(NOT_CAPTURED)


def loss_path(method: str):
    """The step's loss path of ``method`` on a tiny pair, and a batch for it."""
    cfg = compose_config([f"distill={method}", "data.image_size=8"])
    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", num_classes=10),
        teacher=create_model("resnet20", num_classes=10),
        terms=build_terms(cfg.distill),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=10,
        train_labels=torch.arange(64) % 10,
        preview=None if cfg.distill.get("preview") is None else instantiate(cfg.distill.preview),
    )
    if module.step.preview is not None:
        module.step.preview.set_max_epochs(10)
    for term in module.terms.values():
        term.on_train_epoch_start(2)
    views = cfg.distill.views
    shape = (8, views, 3, 8, 8) if views > 1 else (8, 3, 8, 8)
    batch = (torch.randn(shape), torch.arange(8) % 10, torch.arange(8))

    def step_loss(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return module.step((images, labels, indices))[2]

    return module, step_loss, batch


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_loss_path_compiles_without_graph_breaks_and_gives_the_eager_value(method, one_thread):
    module, step_loss, batch = loss_path(method)
    step_loss(*batch)  # first-step host checks happen outside the traced step
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

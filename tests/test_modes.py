"""``eval_mode``: the one way the package runs a module in eval mode and then gives every submodule its
own train/eval flag back (probes, evaluation, export, the init stage)."""

from __future__ import annotations

import pytest
from torch import nn

from pckd_lightning.modes import eval_mode


def mixed() -> tuple[nn.Module, dict[str, bool]]:
    """A model whose submodules are in different modes (a frozen part in eval inside a training one)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Dropout()), nn.Linear(2, 2))
    model.train()
    model[1].eval()  # the nested block and its children in eval
    model[1][1].train()  # ... except its dropout
    return model, {name: m.training for name, m in model.named_modules()}


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_eval_mode_switches_everything_to_eval_and_restores_each_submodules_own_mode():
    model, before = mixed()
    assert len(set(before.values())) == 2, "the fixture mixes modes"
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(modes(model).values())
        model[2].train()  # the block may train some submodules, as the init stage does
        model[1].train()
    assert modes(model) == before


def test_eval_mode_restores_the_modes_when_the_block_raises():
    model, before = mixed()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        model.train()
        raise RuntimeError("boom")
    assert modes(model) == before


def test_nested_eval_modes_restore_the_outer_blocks_modes():
    model, before = mixed()
    with eval_mode(model):
        model[0].train()
        with eval_mode(model[0]):
            assert not model[0].training
        assert model[0].training and not model[2].training
    assert modes(model) == before

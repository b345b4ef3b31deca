"""The module's on-device loss meter: sample-weighted epoch means and the first non-finite step."""

from __future__ import annotations

import json

import pytest
import torch

import ddp_workers
from helpers import free_port, run_ranks
from pckd_lightning.distillation.loss_meter import LossMeter, NonFiniteLossError


def t(value: float) -> torch.Tensor:
    return torch.tensor(value)


def test_means_are_weighted_by_the_samples_of_each_step():
    meter = LossMeter()
    meter.update({"ce": t(2.0), "kd": t(1.0)}, weight=4, step=0)
    meter.update({"ce": t(5.0), "kd": t(3.0)}, weight=2, step=1)
    means = meter.means()
    assert means == pytest.approx({"ce": (2 * 4 + 5 * 2) / 6, "kd": (1 * 4 + 3 * 2) / 6})
    assert meter.mean("ce").item() == pytest.approx(3.0)
    meter.reset()
    assert meter.means() == {}
    meter.update({"ce": t(7.0), "kd": t(0.5)}, weight=3, step=2)
    assert meter.means() == pytest.approx({"ce": 7.0, "kd": 0.5})  # a new epoch forgets the old sums


def test_the_first_non_finite_step_of_each_term_is_reported_and_survives_the_epoch_reset():
    meter = LossMeter()
    meter.update({"ce": t(1.0), "kd": t(1.0)}, weight=1, step=0)
    meter.check(epoch=0)  # all finite: nothing raised
    meter.update({"ce": t(1.0), "kd": t(float("inf"))}, weight=1, step=7)
    meter.update({"ce": t(float("nan")), "kd": t(1.0)}, weight=1, step=9)  # later, another term
    meter.reset()
    with pytest.raises(
        NonFiniteLossError,
        match=r"term\(s\) kd became NaN/Inf first, at global step 7 \(epoch 2\); later also ce \(step 9\).*"
        r"no epoch had finished, so there is no checkpoint",
    ):
        meter.check(epoch=2)
    with pytest.raises(NonFiniteLossError, match=r"the last good checkpoint is kept \(/runs/a/last\.ckpt\)"):
        meter.check(epoch=2, last_checkpoint="/runs/a/last.ckpt")


def test_values_are_read_from_the_graph_without_keeping_it():
    meter = LossMeter()
    w = torch.ones((), requires_grad=True)
    meter.update({"loss": w * 3}, weight=2, step=0)
    assert not meter.mean("loss").requires_grad


@pytest.mark.slow
def test_means_and_the_non_finite_check_cover_every_rank(tmp_path):
    run_ranks(ddp_workers.loss_meter, 2, free_port(), str(tmp_path))
    results = [json.loads((tmp_path / f"meter{rank}.json").read_text()) for rank in (0, 1)]
    # rank 0: kd = 1 on 2 samples; rank 1: kd = 4 on 6 samples, and ce NaN at step 3
    for result in results:
        assert result["means"]["kd"] == pytest.approx((1 * 2 + 4 * 6) / 8)
        assert "ce" in result["error"] and "global step 3" in result["error"]  # raised on both ranks


@pytest.mark.slow
def test_preview_statistics_are_logged_over_every_rank(tmp_path):
    run_ranks(ddp_workers.preview_statistics, 2, free_port(), str(tmp_path))
    logged = [json.loads((tmp_path / f"preview{rank}.json").read_text()) for rank in (0, 1)]
    assert logged[0] == logged[1]
    # 2 of the 9 images are hard (γ > 1.5); their weights are exp(-γ²), the other 7 weigh 1
    gammas = torch.tensor([2.5, 4.0])
    assert logged[0]["preview/hard_fraction"] == pytest.approx(2 / 9)
    assert logged[0]["preview/mean_weight"] == pytest.approx((7 + torch.exp(-(gammas**2)).sum().item()) / 9)

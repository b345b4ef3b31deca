"""The preview weights' schedules (epoch, progress), stepped by PreviewWeighting, and the start-up refusals."""

from __future__ import annotations

import logging
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import compose_config
from pckd_lightning.errors import ConfigError
from pckd_lightning.preview import PreviewWeights
from pckd_lightning.run.build import instantiate
from tiny_module import NUM_CLASSES, make_module, quiet_trainer


def test_epoch_schedule_is_the_published_base_to_the_epoch():
    preview = PreviewWeights()
    preview.set_max_epochs(240)
    for epoch, expected in ((1, 1.005), (2, 1.010025), (3, 1.015075125), (20, 1.1048956)):
        preview.epoch = epoch
        assert preview.exponent == epoch
        assert preview.threshold == pytest.approx(expected, rel=1e-7)


def test_progress_schedule_walks_the_reference_curve_in_a_short_run():
    """20 epochs against the 240-epoch recipe: epoch e uses the recipe's epoch 12·e."""
    long, short = PreviewWeights(), PreviewWeights(schedule="progress", reference_epochs=240)
    long.set_max_epochs(240)
    short.set_max_epochs(20)
    for epoch in (1, 5, 20):
        short.epoch, long.epoch = epoch, 12 * epoch
        assert short.exponent == pytest.approx(12 * epoch)
        assert short.threshold == pytest.approx(math.exp(12 * epoch * math.log(1.005)), rel=1e-12)
        assert short.threshold == pytest.approx(long.threshold, rel=1e-12)
    assert short.threshold == pytest.approx(3.3102, abs=1e-4)  # 1.005^240, the recipe's last threshold


def test_progress_thresholds_by_epoch_in_a_real_fit(tmp_path):
    x = torch.randn(8, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, torch.arange(8) % NUM_CLASSES, torch.arange(8)), batch_size=4)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            seen.append(pl_module.step.preview.threshold)

    preview = PreviewWeights(base=1.5, schedule="progress", reference_epochs=6)
    trainer = quiet_trainer(tmp_path, [Record()], max_epochs=3, limit_val_batches=0)
    trainer.fit(make_module(preview=preview), train_dataloaders=data)
    # x = e·6/3 = 2e: 1.5^2, 1.5^4, 1.5^6, two steps per epoch
    assert seen == pytest.approx([2.25, 2.25, 5.0625, 5.0625, 11.390625, 11.390625])
    assert trainer.callback_metrics["preview/exponent"].item() == pytest.approx(6.0)
    assert trainer.callback_metrics["preview/threshold"].item() == pytest.approx(11.390625)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": 0}, "base must be a finite number > 0"),
        ({"base": -1.005}, "base must be a finite number > 0"),
        ({"base": math.nan}, "base must be a finite number > 0"),
        ({"base": "1.005"}, "base must be a finite number > 0"),
        ({"base": True}, "base must be a finite number > 0"),
        ({"schedule": "epochs"}, "schedule must be one of epoch, progress"),
        ({"schedule": "Progress"}, "schedule must be one of epoch, progress"),
        ({"reference_epochs": 0}, "reference_epochs must be an int >= 1"),
        ({"reference_epochs": 240.0}, "reference_epochs must be an int >= 1"),
    ],
)
def test_bad_values_are_refused_at_construction_with_the_valid_range(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PreviewWeights(**kwargs)


def test_an_overflowing_base_is_refused_before_training_with_the_largest_valid_base(tmp_path):
    """base=100 (an int) used to train nine epochs, then fail with ``OverflowError: int too big to convert``."""
    preview = PreviewWeights(base=100)
    # float32's max is 3.40e38: 100^20 = 1e40 is beyond it; the largest base is 3.40e38^(1/20) = 84.4
    with pytest.raises(ConfigError, match=r"100\^20.*0 < base <= 84\.4") as refused:
        preview.set_max_epochs(20)
    assert "distill.preview.base" in str(refused.value)
    module = make_module(preview=preview)
    trainer = quiet_trainer(tmp_path, [], max_epochs=20)
    x = torch.randn(4, 4, 3, 16, 16)
    data = DataLoader(TensorDataset(x, torch.arange(4) % NUM_CLASSES, torch.arange(4)), batch_size=4)
    with pytest.raises(ConfigError, match="base=100"):
        trainer.fit(module, train_dataloaders=data)
    assert trainer.global_step == 0
    # the progress schedule's last exponent is reference_epochs, whatever the run's length
    with pytest.raises(ConfigError, match=r"100\^240"):
        PreviewWeights(base=100, schedule="progress").set_max_epochs(20)
    with pytest.raises(ConfigError, match=r"schedule=progress needs a finite trainer\.max_epochs"):
        PreviewWeights(schedule="progress").set_max_epochs(-1)


def test_an_int_base_beyond_int64_thresholds_weights_without_overflow():
    preview = PreviewWeights(base=10)
    preview.set_max_epochs(30)
    preview.epoch = 30  # 10^30 > 2^63: an int threshold would overflow against a tensor
    assert isinstance(preview.threshold, float)
    assert preview(torch.tensor([0.5, 1.0, 3.0])).tolist() == [1.0, 1.0, 1.0]  # all easy


def test_a_schedule_typo_in_the_config_is_refused_when_the_preview_weights_are_built(tmp_path):
    cfg = compose_config(["distill=pckd", "++distill.preview.schedule=progres"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="schedule must be one of epoch, progress"):
        instantiate(cfg.distill.preview)
    cfg = compose_config(["distill=pckd", "preview@distill.preview=progress"], output_dir=tmp_path)
    preview = instantiate(cfg.distill.preview)
    assert (preview.schedule, preview.reference_epochs, preview.base) == ("progress", 240, 1.005)


def test_the_earlier_spelling_of_the_schedule_still_composes_with_a_warning(tmp_path, caplog):
    """One config group, conf/preview/, holds the schedules and +preview=all: distill/preview=... is renamed."""
    from pckd_lightning.upgrades import upgrade_overrides

    with caplog.at_level(logging.WARNING):
        overrides = upgrade_overrides(["distill=kd", "distill/preview=progress", "+preview=all"])
    assert overrides == ["distill=kd", "preview@distill.preview=progress", "+preview=all"]
    assert "is spelt preview@distill.preview=progress now" in caplog.text
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert (cfg.distill.preview.schedule, cfg.distill.preview_every_term) == ("progress", True)


def test_record_false_leaves_the_batch_out_of_the_epoch_statistics():
    preview = PreviewWeights(base=1.5)
    ce = torch.tensor([0.1, 0.2, 4.0, 0.3])  # γ = ce / mean(ce) = 0.087, 0.174, 3.48, 0.261: one hard image
    weights = preview(ce, record=False)
    assert preview.epoch_statistics() is None
    assert torch.equal(preview(ce), weights)
    stats = preview.epoch_statistics()
    gamma = ce / ce.mean()
    expected = torch.where(gamma > 1.5, torch.exp(-gamma.square()), torch.ones_like(gamma))  # spec §3
    assert torch.allclose(weights, expected)
    assert stats["hard_fraction"] == pytest.approx(0.25)
    assert stats["mean_weight"] == pytest.approx(expected.mean().item())
    assert sum(stats["histogram"]) == 4
    preview.start_epoch(2)
    assert preview.epoch_statistics() is None and preview.threshold == pytest.approx(2.25)

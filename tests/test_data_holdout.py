"""Tuning never sees the test split: ``data.val_source=holdout`` validates on training images held out
of training (fixed by ``split_seed``) and tests the evaluation split once, at the end (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import compose_config
from pckd_lightning.data import DigitsDataModule
from pckd_lightning.errors import ConfigError
from pckd_lightning.evaluate import main as eval_main
from pckd_lightning.report.collect import dataset_name
from pckd_lightning.run import fit


def digits(**kwargs) -> DigitsDataModule:
    module = DigitsDataModule(image_size=8, **kwargs)
    module.setup("fit")
    return module


def test_the_holdout_comes_from_the_training_images_and_the_test_split_stays_whole():
    plain = digits()
    held = digits(val_source="holdout", holdout_per_class=20)
    assert held.test_set is not None and plain.test_set is None
    # the test split is the plain run's validation split, image for image
    assert np.array_equal(held.test_set.indices, plain.val_set.indices)
    assert held.test_set.source is plain.val_set.source or np.array_equal(
        held.test_set.source.images, plain.val_set.source.images
    )
    # validation: 20 training images per class, none of them trained on
    assert held.val_set.source is held.train_set.source
    assert np.bincount(held.val_set.labels, minlength=10).tolist() == [20] * 10
    assert not set(held.val_set.indices) & set(held.train_set.indices)
    assert len(held.train_set) + len(held.val_set) == len(plain.train_set)
    x, y, _ = next(iter(held.test_dataloader()))
    assert x.shape[1:] == (3, 8, 8) and torch.equal(y, torch.as_tensor(plain.val_set.labels[: len(y)]))


def test_the_holdout_is_fixed_by_split_seed_not_by_the_run_seed():
    a, b = digits(val_source="holdout", seed=0), digits(val_source="holdout", seed=7)
    c = digits(val_source="holdout", split_seed=1)
    assert np.array_equal(a.val_set.indices, b.val_set.indices)
    assert not np.array_equal(a.val_set.indices, c.val_set.indices)


@pytest.mark.parametrize(
    ("option", "message"),
    [({"val_source": "hold"}, "val_source"), ({"holdout_per_class": 0}, "holdout_per_class")],
)
def test_bad_holdout_options_are_refused(option, message):
    with pytest.raises(ConfigError, match=message):
        DigitsDataModule(image_size=8, **option)


@pytest.mark.slow
def test_a_holdout_run_reports_the_final_test_apart_and_is_labelled_in_reports(tmp_path, capsys):
    overrides = [
        "model=digits_scratch_resnet8",
        "distill=ce",
        "data.image_size=8",
        "data.val_source=holdout",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "logger=none",
    ]
    summary = fit(compose_config(overrides, output_dir=tmp_path))
    assert summary["val_source"] == "holdout"
    assert 0 <= summary["test_top1"] <= 100 and 0 <= summary["last_top1"] <= 100
    assert summary["test_top5"] >= summary["test_top1"]
    # pckd-eval scores the split results are reported on, not the holdout (training images)
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(tmp_path / "student.pth"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(summary["test_top1"], abs=1e-4)
    assert result["top5"] == pytest.approx(summary["test_top5"], abs=1e-4)
    assert (
        dataset_name({"data": {"_target_": "x.DigitsDataModule", "val_source": "holdout"}})
        == "digits [holdout val]"
    )


def test_the_optuna_search_tunes_on_the_holdout():
    assert compose_config(["hparams_search=pckd_optuna"]).data.val_source == "holdout"


def test_a_holdout_that_would_empty_a_class_of_training_images_is_refused():
    from pckd_lightning.errors import DataError

    with pytest.raises(
        DataError, match=r"holds out every training image of class \d+; lower data\.holdout_per_class"
    ):
        digits(val_source="holdout", holdout_per_class=1000)

"""Loggers: W&B works offline and records the config and the results; CSV gets every term."""

from __future__ import annotations

import pytest

from helpers import compose_config, wandb_record
from pckd_lightning.run import fit

SHORT = [
    "model=digits_scratch_resnet8",
    "distill=ce",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "callbacks.progress_bar=null",
]


@pytest.mark.slow
def test_wandb_runs_offline_and_writes_config_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = fit(compose_config(["logger=wandb", "seed=3", *SHORT], output_dir=tmp_path))
    # wandb >= 0.19 keeps an offline run in one protobuf log; its keys and values are stored as text
    record = wandb_record(tmp_path)
    for text in (
        "DigitsDataModule",
        '"seed"',
        "train/ce",
        "val/top1",
        "best_top1",
        f"{summary['best_top1']}",
    ):
        assert text.encode() in record, text


@pytest.mark.slow
def test_wandb_gets_the_preview_statistics_and_the_teacher_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "logger=wandb",
        "data.image_size=8",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "callbacks.progress_bar=null",
        "model.train_teacher_if_missing.max_epochs=1",
    ]
    fit(compose_config(overrides, output_dir=tmp_path))
    record = wandb_record(tmp_path)
    for key in ("preview/threshold", "preview/hard_fraction", "preview/mean_weight", "preview/difficulty"):
        assert key.encode() in record, key
    assert b"teacher/val_top1" in record and b"teacher_top1" in record
    assert b"train/category_contrast" in record and b"train/feature_align" in record

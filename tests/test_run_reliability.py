"""Failure is loud, early and harmless: non-finite losses, interrupted writes, bad configs and resumes."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from helpers import compose_config
from pckd_lightning.distillation import DistillationModule
from pckd_lightning.distillation.checkpoint_io import AtomicCheckpointIO
from pckd_lightning.distillation.loss_meter import NonFiniteLossError
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.losses import CrossEntropyTerm, LossTerm
from pckd_lightning.models import create_model
from pckd_lightning.run import fit
from pckd_lightning.run.build import build_terms


class NaNFromCall(LossTerm):
    """A term that turns NaN from its n-th call on."""

    needs_teacher = False

    def __init__(self, from_call: int) -> None:
        super().__init__(weight=1.0)
        self.from_call, self.calls = from_call, 0

    def forward(self, ctx):
        self.calls += 1
        value = ctx.cross_entropy
        return value * float("nan") if self.calls >= self.from_call else value


def tiny_loaders():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8, generator=g), torch.arange(8) % 4
    return DataLoader(TensorDataset(x, y, torch.arange(8)), batch_size=4), DataLoader(
        TensorDataset(x, y, torch.arange(8)), batch_size=4
    )


def test_a_nan_loss_stops_the_run_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
    module = DistillationModule(
        student=create_model("resnet8", num_classes=4),
        terms={"ce": CrossEntropyTerm(), "unstable": NaNFromCall(from_call=4)},  # epoch 0: calls 1, 2
        optimizer=partial(torch.optim.SGD, lr=0.01),
        num_classes=4,
    )
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[last],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
    )
    train, val = tiny_loaders()
    with pytest.raises(NonFiniteLossError, match=r"unstable.*global step 3 \(epoch 1\)") as err:
        trainer.fit(module, train, val)
    assert "ce" not in str(err.value).split("became")[0]
    assert "lr" in str(err.value)  # and says what to try
    assert f"the last good checkpoint is kept ({tmp_path / 'last.ckpt'})" in str(err.value)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 0  # written after the good epoch, never after the broken one
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_an_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}


def test_a_misspelt_term_option_lists_the_valid_ones():
    cfg = compose_config(["distill=kd", "+distill.terms.kd.temprature=3"])
    with pytest.raises(ConfigError, match=r"distill\.terms\.kd.*temprature.*valid options.*temperature"):
        build_terms(cfg.distill)


@pytest.mark.parametrize("weight", ["-1", "nan"])
def test_negative_or_nan_weights_are_refused(weight):
    cfg = compose_config(["distill=kd", f"distill.terms.kd.weight={weight}"])
    with pytest.raises(ConfigError, match=r"weight must be a finite number >= 0"):
        build_terms(cfg.distill)


def test_views_mismatched_between_data_and_method_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.views=1.*expects views=4"):
        fit(compose_config(["distill=pckd", "data.views=1"], output_dir=tmp_path))


@pytest.mark.slow
def test_resuming_with_another_student_is_refused(tmp_path):
    common = [
        "model=digits_scratch_resnet8",
        "distill=ce",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "callbacks.progress_bar=null",
        "logger=none",
        "trainer.max_epochs=1",
    ]
    first = fit(compose_config(common, output_dir=tmp_path / "a"))
    changed = [
        *common,
        "model.student.name=resnet14",
        "trainer.max_epochs=2",
        f"ckpt_path={first['last_checkpoint']}",
    ]
    with pytest.raises(ConfigError, match=r"model\.student\.name: 'resnet8' -> 'resnet14'.*config\.yaml"):
        fit(compose_config(changed, output_dir=tmp_path / "b"))
    # allowed by the config check, the weights still cannot be loaded into another architecture
    allowed = [*changed, "resume.allow_changes=[model.student.name]"]
    with pytest.raises(ConfigError, match=r"does not fit this run's model.*config\.yaml"):
        fit(compose_config(allowed, output_dir=tmp_path / "c"))


def test_a_teacher_at_chance_level_is_flagged_and_refused_under_min_accuracy(tmp_path, caplog):
    torch.manual_seed(0)
    teacher = tmp_path / "untrained.pth"
    torch.save({"model": create_model("resnet20", num_classes=10).state_dict()}, teacher)
    common = [
        "distill=kd",
        f"model.teacher.checkpoint={teacher}",
        "callbacks.progress_bar=null",
        "logger=none",
    ]
    with pytest.raises(CheckpointError, match=r"below teacher\.min_accuracy=50"):
        fit(compose_config([*common, "module.teacher_options.min_accuracy=50"], output_dir=tmp_path / "a"))
    module = DistillationModule(
        student=create_model("resnet8", num_classes=10),
        terms={"ce": CrossEntropyTerm()},
        optimizer=partial(torch.optim.SGD, lr=0.01),
        num_classes=10,
    )
    with caplog.at_level("WARNING"):
        module.check_teacher_accuracy(10.5)
    assert "CHANCE LEVEL" in caplog.text and "model.teacher.checkpoint" in caplog.text

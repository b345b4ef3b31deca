"""GradientShare: per-term gradient norms and cosines against a hand computation, and training unchanged."""

from __future__ import annotations

import csv
import math
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import compose_config
from pckd_lightning.callbacks import GradientShare
from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import CRDTerm, CrossEntropyTerm, KDTerm
from pckd_lightning.models import ModelOutput, ZooModel
from pckd_lightning.preview import PreviewWeights
from pckd_lightning.run.build import instantiate
from tiny_module import NUM_CLASSES, make_module, pckd_terms

T = 4.0


class LinearModel(ZooModel):
    """``logits = W · flatten(x)``: gradients of CE and KD on W have closed forms."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.feature_dim = features
        self.fc = nn.Linear(features, classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        pooled = x.flatten(1)
        return ModelOutput(stages=[], pooled=pooled, logits=self.fc(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.fc


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = (z - z.max(dim=1, keepdim=True).values).exp()
    return e / e.sum(dim=1, keepdim=True)


def test_norms_and_cosines_match_the_closed_form_gradients():
    torch.manual_seed(0)
    b, d, c = 6, 12, NUM_CLASSES
    student, teacher = LinearModel(d, c), LinearModel(d, c)
    module = DistillationModule(
        student=student,
        teacher=teacher,
        terms={"kd": KDTerm(temperature=T, weight=0.9), "ce": CrossEntropyTerm(weight=0.1)},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=c,
        teacher_options=TeacherOptions(measure=False),
    )
    x, y = torch.randn(b, 3, 2, 2), torch.tensor([0, 1, 2, 3, 4, 0])
    values = GradientShare(every_n_steps=1).measure(module, (x, y, torch.arange(b)))

    # by hand, in float64: d(mean CE)/dW = (p - onehot)ᵀ x / B; d(mean T²·KL)/dW = T (p_s^T - p_t^T)ᵀ x / B
    xs = x.flatten(1).double()
    w_s, w_t = student.fc.weight.detach().double(), teacher.fc.weight.detach().double()
    z_s, z_t = xs @ w_s.T, xs @ w_t.T
    g_ce = 0.1 * (softmax(z_s) - nn.functional.one_hot(y, c).double()).T @ xs / b
    g_kd = 0.9 * T * (softmax(z_s / T) - softmax(z_t / T)).T @ xs / b
    cos = float((g_kd * g_ce).sum() / (g_kd.norm() * g_ce.norm()))
    assert values["grad/ce/norm"] == pytest.approx(float(g_ce.norm()), rel=1e-5)
    assert values["grad/kd/norm"] == pytest.approx(float(g_kd.norm()), rel=1e-5)
    assert values["grad/kd/cos_ce"] == pytest.approx(cos, rel=1e-5, abs=1e-6)
    assert values["grad/ce/cos_ce"] == pytest.approx(1.0, rel=1e-6)
    assert values["grad/ce/head_norm"] == values["grad/kd/head_norm"] == 0.0  # no heads
    assert all(p.grad is None for p in module.parameters())


def test_heads_are_measured_apart_from_the_student():
    module = make_module()
    x = torch.randn(4, 4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    values = GradientShare(every_n_steps=1).measure(
        module, (x, torch.arange(4) % NUM_CLASSES, torch.arange(4))
    )
    assert values["grad/ce/head_norm"] == values["grad/kd/head_norm"] == 0.0
    for head_term in ("category_contrast", "feature_align"):
        assert values[f"grad/{head_term}/head_norm"] > 0
    assert set(values) == {f"grad/{t}/{k}" for t in module.terms for k in ("norm", "head_norm", "cos_ce")}
    assert all(math.isfinite(v) for v in values.values())
    assert all(-1 - 1e-6 <= values[f"grad/{t}/cos_ce"] <= 1 + 1e-6 for t in module.terms)


def _data(views: int = 4):
    x = torch.randn(8, views, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, torch.arange(8) % NUM_CLASSES, torch.arange(8)), batch_size=4)


def _train(tmp_path, every_n_steps: int | None):
    """Two epochs of PCKD + CRD (BatchNorm, preview weights, a memory bank, random negatives)."""
    terms = pckd_terms() | {"crd": CRDTerm(num_data=8, nce_k=4, weight=0.8)}
    module = make_module(terms=terms, preview=PreviewWeights(base=1.5))
    callbacks = [] if every_n_steps is None else [GradientShare(every_n_steps)]
    trainer = L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="log"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks,
        max_epochs=2,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    L.seed_everything(0)
    trainer.fit(module, train_dataloaders=_data())
    return module, trainer


def test_monitored_training_is_bitwise_the_unmonitored_one(tmp_path):
    plain, plain_trainer = _train(tmp_path / "plain", None)
    watched, watched_trainer = _train(tmp_path / "watched", every_n_steps=1)
    share = next(c for c in watched_trainer.callbacks if isinstance(c, GradientShare))
    assert share.last and share.measured_step == 3  # measured at every one of the 4 steps
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # parameters, BatchNorm statistics, CRD's banks and normalizers
    for key in ("preview/hard_fraction", "preview/mean_weight", "train/loss"):
        a, b = plain_trainer.callback_metrics[key], watched_trainer.callback_metrics[key]
        assert torch.equal(a, b), key


def test_off_steps_do_nothing_and_measured_steps_reach_the_csv_log(tmp_path, monkeypatch):
    measured = []
    original = GradientShare.measure

    def counting(self, pl_module, batch):
        measured.append(pl_module.trainer.global_step)
        return original(self, pl_module, batch)

    monkeypatch.setattr(GradientShare, "measure", counting)
    _, trainer = _train(tmp_path / "every3", every_n_steps=3)
    assert measured == [0, 3]
    with open(f"{trainer.logger.log_dir}/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("grad/feature_align/norm")]
    assert [int(r["step"]) for r in logged] == [0, 3]
    assert float(logged[0]["grad/kd/cos_ce"]) <= 1.0
    measured.clear()
    _train(tmp_path / "off", every_n_steps=0)
    assert measured == []


@pytest.mark.parametrize("bad", [-1, 2.5, "50", True])
def test_a_bad_interval_is_refused(bad):
    with pytest.raises(ConfigError, match="every_n_steps must be an int >= 0"):
        GradientShare(bad)


def test_the_default_callbacks_hold_it_switched_off(tmp_path):
    share = instantiate(compose_config([], output_dir=tmp_path).callbacks.gradient_share)
    assert isinstance(share, GradientShare) and share.every_n_steps == 0
    cfg = compose_config(["callbacks.gradient_share.every_n_steps=50"], output_dir=tmp_path)
    assert instantiate(cfg.callbacks.gradient_share).every_n_steps == 50

"""End to end through the Hydra app: teacher training, KD, PCKD on real CIFAR-100, and the demo."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._inductor.config

from helpers import METHODS, QUIET, REPO, compose_config, save_teacher, two_step_run
from pckd_lightning.losses import LossTerm
from pckd_lightning.models import create_model
from pckd_lightning.run import fit


@pytest.mark.slow
def test_teacher_training_fast_dev_run(tmp_path):
    cfg = compose_config(
        ["model=digits_scratch_resnet8", "distill=ce", "+trainer.fast_dev_run=2", *QUIET], output_dir=tmp_path
    )
    summary = fit(cfg)
    weights = torch.load(summary["student_weights"], weights_only=True)["model"]
    model = create_model("resnet8", num_classes=10)
    model.load_state_dict(weights, strict=True)
    assert summary["teacher"] is None and summary["method"] == "ce"


@pytest.mark.slow
def test_kd_fast_dev_run_with_a_given_teacher(tmp_path):
    teacher = save_teacher(tmp_path / "teacher.pth", "resnet20", 10)
    cfg = compose_config(
        ["distill=kd", f"model.teacher.checkpoint={teacher}", "+trainer.fast_dev_run=2", *QUIET],
        output_dir=tmp_path,
    )
    summary = fit(cfg)
    assert summary["method"] == "kd" and summary["teacher"] == "resnet20"
    assert summary["teacher_top1"] is not None and 0 <= summary["teacher_top1"] <= 100
    assert "teacher_training" not in summary  # the checkpoint existed, so no teacher was trained


@pytest.mark.slow
@pytest.mark.cifar
def test_pckd_end_to_end_on_real_cifar100(tmp_path, cifar_root):
    teacher = save_teacher(tmp_path / "resnet56.pth", "resnet56", 100)
    cfg = compose_config(
        [
            "experiment=cifar100_pckd_resnet56_resnet20",
            f"data.root={cifar_root}",
            "data.train_per_class=2",
            "data.val_per_class=1",
            f"model.teacher.checkpoint={teacher}",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            *QUIET,
        ],
        output_dir=tmp_path / "run",
    )
    summary = fit(cfg)
    assert summary["epochs"] == 2 and 0.0 <= summary["best_top1"] <= 100.0
    assert set(summary["terms"]) == {"ce", "kd", "category_contrast", "center_align", "feature_align"}
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    thresholds = [float(r["preview/threshold"]) for r in rows if r.get("preview/threshold")]
    assert thresholds == pytest.approx([1.005, 1.005**2])
    for term in summary["terms"]:
        values = [float(r[f"train/{term}"]) for r in rows if r.get(f"train/{term}")]
        assert len(values) == 2 and all(torch.isfinite(torch.tensor(values)))
    assert (tmp_path / "run" / "summary.json").is_file()
    assert Path(summary["last_checkpoint"]).is_file()


@pytest.mark.slow
def test_the_demo_trains_and_caches_a_teacher_then_distills(tmp_path):
    args = [
        str(Path(sys.executable).with_name("pckd-train")),
        "trainer.max_epochs=1",
        "model.train_teacher_if_missing.max_epochs=1",
        f"paths.log_dir={tmp_path / 'outputs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "callbacks.progress_bar=null",
    ]
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "student best val top-1" in first.stdout and "teacher trained now" in first.stdout
    assert (tmp_path / "cache" / "teachers" / "digits_resnet20_seed0_e1.pth").is_file()
    second = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "teacher trained now" not in second.stdout
    assert "skipping teacher training" in second.stdout + second.stderr


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    """Each method's fp32 two-step run, made once: the every-method test checks it and the compiled-terms
    test compares against it (the same run twice would cost CI a minute)."""
    runs: dict[str, tuple[dict, dict[str, list[float]]]] = {}

    def run(method: str) -> tuple[dict, dict[str, list[float]]]:
        if method not in runs:
            runs[method] = two_step_run(tmp_path_factory.mktemp(method), method, "trainer.precision=32-true")
        return runs[method]

    return run


#: bf16-mixed through the app for an init-stage method (AB: its stage under bf16), DKD, CRD's bank, ReviewKD's
#: fusion and PCKD's float32 heads; every method's step under bf16 autocast is checked in test_distillation_module
BF16_APP_METHODS = ("ab", "crd", "dkd", "pckd", "reviewkd")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "precision"),
    [(m, "32-true") for m in METHODS] + [(m, "bf16-mixed") for m in BF16_APP_METHODS],
)
def test_every_method_runs_through_the_app(tmp_path, method, precision, fp32_run):
    """Every distill config in fp32, a few in bf16."""
    if precision == "32-true":
        summary, values = fp32_run(method)
    else:
        summary, values = two_step_run(tmp_path, method, f"trainer.precision={precision}")
    assert summary["method"] == method and summary["terms"]
    for term, logged in values.items():
        assert logged and all(math.isfinite(v) for v in logged), (term, logged)


def test_teacher_float32_under_bf16_measures_the_float32_teacher(tmp_path):
    """The bf16 teacher's accuracy is measured in bf16; with module.teacher_options.float32 it is the float32 one's."""
    runs = {
        name: two_step_run(tmp_path / name, "pckd", *overrides)[0]
        for name, overrides in {
            "fp32": ["trainer.precision=32-true"],
            "bf16": ["trainer.precision=bf16-mixed"],
            "bf16_teacher_fp32": ["trainer.precision=bf16-mixed", "module.teacher_options.float32=true"],
        }.items()
    }
    assert runs["bf16_teacher_fp32"]["teacher_top1"] == runs["fp32"]["teacher_top1"]
    assert runs["bf16"]["teacher_top1"] == pytest.approx(runs["fp32"]["teacher_top1"], abs=5.0)


#: the app's compile_losses path, inductor's code generation included, for DKD's masks, CRD's drawn negatives
#: and memory bank, and PCKD (KD among its terms); that every method's terms trace (forward, gradient and
#: update as one graph) and give the eager values is proven in test_distillation_captured, at a tenth of the cost
COMPILED_METHODS = ("crd", "dkd", "pckd")


@pytest.mark.slow
@pytest.mark.parametrize("method", COMPILED_METHODS)
def test_compiled_loss_terms_log_the_eager_losses(tmp_path, method, monkeypatch, fp32_run):
    _, eager = fp32_run(method)
    compiled_terms = []
    compile_module = torch.nn.Module.compile

    def recording_compile(module, *args, **kwargs):
        if isinstance(module, LossTerm):
            compiled_terms.append(module)
        return compile_module(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recording_compile)
    with torch._inductor.config.patch(fallback_random=True):  # CRD's negatives drawn as in eager code
        summary, compiled = two_step_run(
            tmp_path / "compiled", method, "module.performance.compile_losses=true"
        )
    assert len(compiled_terms) == len(summary["terms"])
    assert compiled.keys() == eager.keys()
    for term, logged in eager.items():
        assert compiled[term] == pytest.approx(logged, rel=1e-3, abs=1e-5), term

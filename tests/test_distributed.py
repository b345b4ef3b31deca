"""DDP on CPU (gloo): k processes compute what one process computes on the k-times batch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import ddp_workers
from helpers import REPO, compose_config, free_port, run_ranks


@pytest.mark.slow
@pytest.mark.parametrize("compile_losses", [False, True])
def test_first_step_gradients_of_2x8_equal_1x16_with_sync_bn_and_gathered_contrast(tmp_path, compile_losses):
    """The two-process run with compiled loss terms too (the single process stays eager)."""
    args = (2, free_port(), str(tmp_path / "ddp.pt"), compile_losses)
    run_ranks(ddp_workers.first_step_gradients, *args)
    ddp_workers.first_step_gradients(0, 1, "", str(tmp_path / "single.pt"))
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    assert ddp.keys() == single.keys()
    assert any(k.startswith("terms.category_contrast") for k in ddp)
    assert any(k.startswith("terms.feature_align") for k in ddp)
    for name in single:
        assert torch.allclose(ddp[name], single[name], atol=1e-5, rtol=0), (
            name,
            (ddp[name] - single[name]).abs().max().item(),
        )


@pytest.mark.slow
def test_first_step_gradients_of_2x8_equal_1x16_for_a_vit_teacher_and_a_timm_cnn_student(tmp_path):
    """timm's BatchNormAct2d layers take global statistics and keep their activation (GlobalBatchNormAct)."""
    run_ranks(ddp_workers.first_step_gradients, 2, free_port(), str(tmp_path / "ddp.pt"), False, True)
    ddp_workers.first_step_gradients(0, 1, "", str(tmp_path / "single.pt"), timm_pair=True)
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    assert ddp.keys() == single.keys() and any(k.startswith("student.model.blocks") for k in ddp)
    assert "center_align" not in {k.split(".")[1] for k in ddp if k.startswith("terms.")}
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=1e-4, msg=name)  # gradients ~10


@pytest.mark.slow
def test_global_batchnorm_under_bf16_autocast_takes_float32_statistics_of_the_global_batch(tmp_path):
    run_ranks(ddp_workers.bf16_global_batchnorm, 2, free_port(), str(tmp_path / "bn.pt"))
    got = torch.load(tmp_path / "bn.pt")
    x = ddp_workers.bf16_batch().float().requires_grad_()
    reference = torch.nn.BatchNorm2d(x.shape[1]).train()
    expected = reference(x)  # one process, float32, the whole batch
    expected.square().sum().backward()
    half = len(x) // 2
    assert got["out"].dtype == torch.bfloat16
    torch.testing.assert_close(got["out"].float(), expected[:half].detach(), atol=2e-2, rtol=1e-2)
    assert got["grad"].dtype == torch.bfloat16  # rank 0's share: its gradient holds every rank's terms
    torch.testing.assert_close(got["grad"].float(), x.grad[:half], atol=5e-2, rtol=2e-2)
    for name in ("running_mean", "running_var"):
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], getattr(reference, name), atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_crd_memory_bank_is_identical_across_ranks(tmp_path):
    run_ranks(ddp_workers.crd_banks, 2, free_port(), str(tmp_path))
    rank0, rank1 = torch.load(tmp_path / "banks0.pt"), torch.load(tmp_path / "banks1.pt")
    for bank in ("student", "teacher"):
        assert torch.equal(rank0[bank], rank1[bank]), bank
    # and the steps did write into them (both ranks' images)
    fresh = ddp_workers.crd_fresh_banks()
    assert not torch.equal(rank0["student"], fresh["student"])


@pytest.mark.slow
def test_two_process_pckd_runs_through_the_app_in_fp32_and_bf16(tmp_path):
    """A sweep of two DDP jobs (float32, bf16-mixed), as a user sweeps them: Lightning starts rank 1 once with
    the whole sweep, and the two ranks run the jobs in step (README, "Multi-GPU")."""
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    # 7 classes: 253 val images, odd, so Lightning's default sampler would pad the split with a repeat
    torch.save({"model": ddp_workers.create_model("resnet20", num_classes=7).state_dict()}, teacher)
    out = tmp_path / "outputs"
    args = [
        str(Path(sys.executable).with_name("pckd-train")),
        "-m",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "data.image_size=8",
        "+data.class_subset=7",
        f"model.teacher.checkpoint={teacher}",
        f"paths.log_dir={out}",
        "callbacks.progress_bar=null",
        "trainer.precision=32-true,bf16-mixed",
    ]
    run = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folders = [p.parent for p in out.rglob("summary.json")]
    runs = {OmegaConf.load(folder / "config.yaml").trainer.precision: folder for folder in folders}
    assert len(folders) == 2 and runs.keys() == {"32-true", "bf16-mixed"}  # a folder per job, not per rank
    for folder in runs.values():
        assert (folder / "train_ddp_process_1.log").exists()  # the second rank ran, and logged there
        # the epoch values reduced by the library over the ranks were logged (and Lightning did not warn)
        with open(folder / "csv" / "metrics.csv") as f:
            logged = {k for row in csv.DictReader(f) for k, v in row.items() if v}
        assert {"train/loss", "train/top1", "train/category_contrast", "preview/hard_fraction"} <= logged
    assert "It is recommended to use" not in run.stderr
    # the synchronized val top-1 of the float32 job is the single-process accuracy of the same weights on the
    # whole val set, each image once; so is the teacher's, measured by both ranks
    from pckd_lightning.evaluate import evaluate
    from pckd_lightning.run.build import instantiate

    summary = json.loads((runs["32-true"] / "summary.json").read_text())
    student = ddp_workers.create_model("resnet8", num_classes=7)
    student.load_state_dict(torch.load(runs["32-true"] / "student.pth")["model"])
    cfg = compose_config(["data.image_size=8", "+data.class_subset=7", "data.views=1", "distill=ce"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    assert len(datamodule.val_set) % 2 == 1
    single = evaluate(student, datamodule.val_dataloader())
    assert single["top1"] == pytest.approx(summary["last_top1"], abs=1e-4)
    teacher_model = ddp_workers.create_model("resnet20", num_classes=7)
    teacher_model.load_state_dict(torch.load(teacher)["model"])
    assert evaluate(teacher_model, datamodule.val_dataloader())["top1"] == pytest.approx(
        summary["teacher_top1"], abs=1e-4
    )

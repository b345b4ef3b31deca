"""The side-by-side benchmark harness, on its tiny profile (a few steps on real CIFAR-100)."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

from helpers import REPO, load_benchmark
from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.errors import ConfigError
from pckd_lightning.models import create_model
from pckd_lightning.run.build import build_terms, instantiate


@pytest.mark.slow
@pytest.mark.cifar
def test_tiny_profile_trains_every_method_and_writes_the_table(tmp_path, cifar_root, capsys):
    compare = load_benchmark("compare", "compare")
    compare.main(["--profile", "tiny", "--root", str(cifar_root), "--out", str(tmp_path)])
    report = (tmp_path / "report" / "report.md").read_text()
    for row in ("teacher", "student (scratch)", "kd", "dkd", "pckd"):
        assert row in report, row
    assert "resnet14" in report and "resnet8" in report
    assert (tmp_path / "report" / "curves.png").is_file()
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1 + 4 * 2  # teacher + 4 methods x 2 seeds
    # a second call finds every run finished and only rebuilds the report
    compare.main(["--profile", "tiny", "--root", str(cifar_root), "--out", str(tmp_path)])
    assert capsys.readouterr().out.count("done before, skipped") == 9


@pytest.mark.slow
def test_a_stopped_or_killed_run_continues_from_its_last_epoch_and_a_finished_one_is_skipped(
    tmp_path, capsys
):
    """The harness of hours-long studies: a run cut short is resumed, never restarted from epoch 0."""
    import json

    from helpers import QUIET, SCRATCH_RUN

    compare = load_benchmark("compare", "compare")
    run = tmp_path / "run"
    compare.run_once("first", [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=1"], run)
    last = run / "checkpoints" / "last.ckpt"
    written = json.loads((run / "summary.json").read_text())
    assert compare.resume_point(run) is False  # finished: skipped
    compare.run_once("same", [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=1"], run)
    assert "same: done before, skipped" in capsys.readouterr().out
    # finished with other settings: skipping would report the old run as this job
    for other, change in (("trainer.max_epochs=2", "max_epochs: 1 -> 2"), ("optimizer.lr=0.2", "lr: ")):
        with pytest.raises(ConfigError, match=rf"finished run of other settings.*{change}.*another --out"):
            compare.run_once("other", [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=1", other], run)
    assert json.loads((run / "summary.json").read_text()) == written
    # as a SIGTERM leaves it: the summary marked interrupted, naming the checkpoint to resume from
    interrupted = written | {"status": "interrupted", "resume_checkpoint": str(last)}
    (run / "summary.json").write_text(json.dumps(interrupted))
    assert compare.resume_point(run) == last
    compare.run_once("again", [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=2"], run)
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["status"] == "complete" and resumed["epochs"] == 2
    assert resumed["resumed_from"]["completed_epochs"] == 1
    assert "again: resuming from" in capsys.readouterr().out
    # as kill -9 leaves it: a checkpoint and no summary
    (run / "summary.json").unlink()
    assert compare.resume_point(run) == last


def test_every_row_of_every_profile_composes(tmp_path):
    compare = load_benchmark("compare", "compare")
    for name, profile in compare.PROFILES.items():
        for row in profile.methods:
            overrides = compare.student_run(profile, row, "data", profile.pairs[0], tmp_path / "t.pth", 0, 1)
            cfg = compare.compose_run(overrides, tmp_path)
            assert cfg.model.student.name == profile.pairs[0][1], name
            assert cfg.distill.name == row, (name, row)  # the report's row


def ablation_config(row: str, tmp_path):
    compare = load_benchmark("compare", "compare")
    profile = compare.PROFILES["ablation"]
    overrides = compare.student_run(profile, row, "data", profile.pairs[0], tmp_path / "t.pth", 0, 1)
    return compare.compose_run(overrides, tmp_path)


def test_the_ablation_profile_is_the_cpu_profile_with_one_change_per_row(tmp_path):
    compare = load_benchmark("compare", "compare")
    ablation, cpu = compare.PROFILES["ablation"], compare.PROFILES["cpu"]
    assert (ablation.pairs, ablation.overrides, ablation.student_epochs) == (
        cpu.pairs,
        cpu.overrides,
        cpu.student_epochs,
    )
    assert "data.split_seed=0" in ablation.overrides and len(ablation.seeds) >= 3
    cfgs = {row: ablation_config(row, tmp_path) for row in ablation.methods}
    terms = {row: {k for k, v in cfg.distill.terms.items() if v is not None} for row, cfg in cfgs.items()}
    full = {"ce", "kd", "category_contrast", "center_align", "feature_align"}
    assert terms["pckd"] == full and cfgs["pckd"].distill.views == 4
    assert cfgs["ce"].model.teacher is None and terms["ce"] == {"ce"}
    kd, ce1_kd1 = cfgs["kd"].distill.terms, cfgs["ce1_kd1"].distill.terms
    assert (kd.ce.weight, kd.kd.weight, ce1_kd1.ce.weight, ce1_kd1.kd.weight) == (0.1, 0.9, 1.0, 1.0)
    wo_preview = cfgs["pckd_wo_preview"].distill
    assert wo_preview.preview is None and not any(t.get("preview") for t in wo_preview.terms.values())
    for row, removed in (
        ("pckd_wo_fa", "feature_align"),
        ("pckd_wo_cc", "category_contrast"),
        ("pckd_wo_ca", "center_align"),
    ):
        assert terms[row] == full - {removed}, row
    assert cfgs["pckd_one_view"].distill.views == 1 and cfgs["pckd_one_view"].data.views == 1
    warm = cfgs["pckd_fa_cc_warmup"].distill.terms
    assert (
        warm.feature_align.warmup_epochs
        == warm.category_contrast.warmup_epochs
        == compare.FA_CC_WARMUP_EPOCHS
    )
    assert "warmup_epochs" not in cfgs["pckd"].distill.terms.feature_align
    assert cfgs["pckd_progress"].distill.preview.schedule == "progress"
    assert cfgs["pckd"].callbacks.gradient_share.every_n_steps == 50
    assert cfgs["kd"].callbacks.gradient_share.every_n_steps == 0
    # every run is recorded under its row's name: the row label of the report
    assert {row: cfg.distill.name for row, cfg in cfgs.items()} == {row: row for row in ablation.methods}


@pytest.mark.parametrize("row", load_benchmark("compare", "compare").ABLATION_ROWS)
def test_every_ablation_row_builds_and_computes_its_losses(row, tmp_path, one_thread):
    cfg = ablation_config(row, tmp_path)
    torch.manual_seed(0)
    teacher = None if cfg.model.teacher is None else create_model("resnet14", 5)
    module = DistillationModule(
        student=create_model("resnet8", 5),
        teacher=teacher,
        terms=build_terms(cfg.distill),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=5,
        teacher_options=TeacherOptions(measure=False),
        preview=instantiate(cfg.distill.preview),
    )
    if module.step.preview is not None:
        module.step.preview.set_max_epochs(cfg.trainer.max_epochs)
    module.on_train_epoch_start()
    views = cfg.distill.views
    images = torch.randn(4, views, 3, 16, 16) if views > 1 else torch.randn(4, 3, 16, 16)
    _, losses, _ = module.step((images, torch.arange(4), torch.arange(4)))
    assert set(losses) == {k for k, v in cfg.distill.terms.items() if v is not None}
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.slow
@pytest.mark.cifar
def test_tiny_ablation_profile_reports_its_rows_paired_with_kd(tmp_path, cifar_root):
    """Rows of each kind: scratch, KD, a method, a variant renamed, a variant adding keys (every row's
    composition and step: the tests above)."""
    compare = load_benchmark("compare", "compare")
    rows = ["ce", "kd", "pckd", "pckd_wo_fa", "pckd_fa_cc_warmup"]
    args = ["--profile", "tiny-ablation", "--root", str(cifar_root), "--out", str(tmp_path), "--rows", *rows]
    compare.main(args)
    report = (tmp_path / "report" / "report.md").read_text()
    assert len(list(tmp_path.rglob("summary.json"))) == 1 + len(rows) * 2
    paired = report.split("### Paired Δ vs KD over the same seeds, best-epoch top-1 (%)")[1].split("##")[0]
    for row in rows:
        label = "student (scratch)" if row == "ce" else row
        assert f"| {label} |" in report, row
        assert (f"| {label} |" in paired) == (row != "kd"), row


def test_the_readme_links_the_results_page_and_its_figure_is_committed():
    readme, results = (REPO / "README.md").read_text(), (REPO / "docs" / "results.md").read_text()
    assert "](docs/results.md)" in readme
    assert "__" not in results  # no placeholder left unfilled
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", results):
        assert (REPO / "docs" / figure).is_file(), figure
    assert "python benchmarks/compare.py --profile ablation" in results


def test_the_warmup_variant_config_is_the_ablation_row(tmp_path):
    """distill=pckd_warmup composes to what the ablation's pckd_fa_cc_warmup row trained (less its monitor)."""
    from helpers import compose_config

    compare = load_benchmark("compare")
    row = compose_config(
        ["distill=pckd", *compare.ABLATION_VARIANTS["pckd_fa_cc_warmup"].overrides[:2]], tmp_path
    )
    variant = compose_config(["distill=pckd_warmup"], tmp_path)
    assert variant.distill.terms == row.distill.terms
    assert variant.distill.preview == row.distill.preview and variant.distill.views == row.distill.views
    assert variant.distill.terms.feature_align.warmup_epochs == compare.FA_CC_WARMUP_EPOCHS == 5


@pytest.mark.cifar
def test_a_selection_runs_part_of_a_profile_and_refuses_what_it_lacks(tmp_path, cifar_root, capsys):
    """Two processes share a study by seeds/lengths/rows; a from-scratch-only part trains no teacher."""
    compare = load_benchmark("compare", "compare")
    schedule = compare.PROFILES["schedule"]
    part = compare.select(schedule, [2, 0], [60], ["kd", "ce"])
    assert (part.seeds, part.lengths, part.methods) == ((0, 2), (60,), ("ce", "kd"))
    assert compare.select(schedule, None, None, None) == schedule
    with pytest.raises(SystemExit, match=r"--lengths 240: not in this profile; choose from \[20, 60, 120\]"):
        compare.select(schedule, None, [240], None)
    compare.main(
        [
            "--profile",
            "tiny",
            "--root",
            str(cifar_root),
            "--out",
            str(tmp_path),
            "--rows",
            "ce",
            "--seeds",
            "1",
        ]
    )
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert runs == ["resnet14_resnet8/ce/seed1"]  # no teacher folder

"""A researcher's day (issue 18): experiments name their runs, W&B joins the CSV record, the dashboard
shows the learning rate and percent accuracies, Hydra's tooling sees every group, and a batch system's log
file keeps one plain line per epoch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Glob

from helpers import CONF_DIR, REPO, SCRATCH_RUN, compose_config
from pckd_lightning.report.cli import build_report
from pckd_lightning.run import fit
from pckd_lightning.run.loggers import WANDB_RUN_FOLDER

FAST = SCRATCH_RUN
PCKD_TRAIN = str(Path(sys.executable).with_name("pckd-train"))


def env() -> dict[str, str]:
    out = {**os.environ, "WANDB_MODE": "offline"}
    out.pop("PCKD_LAUNCH_ID", None)
    return out


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# -- 1. experiments set their name and tags; 2. W&B joins the CSV --------------------------------------------


def test_an_experiment_names_the_run_folder_and_the_wandb_run():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=cifar100_teacher_resnet56", "logger=wandb"],
            return_hydra_config=True,
        )
    assert cfg.task_name == "teacher_resnet56"
    assert list(cfg.tags) == ["cifar100", "teacher", "resnet56"]
    assert "/teacher_resnet56/runs/" in cfg.hydra.run.dir
    wandb = cfg.logger.wandb
    assert (wandb.group, wandb.job_type, list(wandb.tags)) == ("teacher_resnet56", "ce", list(cfg.tags))
    assert cfg.logger.csv._target_ == "pckd_lightning.loggers.RunCSVLogger"  # W&B never removes the CSV


# -- 3. the dashboard ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_log_has_the_lr_percent_accuracies_and_optional_step_curves(tmp_path):
    summary = fit(
        compose_config(
            [*FAST, "trainer.max_epochs=2", "logger=none", "logger.log_every_n_steps=1"], output_dir=tmp_path
        )
    )
    rows = csv_rows(tmp_path)
    lrs = [float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")]
    assert lrs == [0.05, 0.05]  # one per epoch (the digits recipe decays at epochs 6 and 8)
    steps = [r for r in rows if r.get("train/loss_step")]
    assert len(steps) == 4  # 2 steps x 2 epochs
    val = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert val[-1] == pytest.approx(summary["last_top1"]) and max(val) == pytest.approx(summary["best_top1"])
    train_top1 = [float(r["train/top1"]) for r in rows if r.get("train/top1")]
    assert (
        all(0 <= v <= 100 for v in val + train_top1) and max(val + train_top1) > 1
    )  # percent, not fractions


@pytest.mark.slow
def test_a_resume_continues_its_folder_and_its_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    first = fit(compose_config([*FAST, "trainer.max_epochs=1", "logger=wandb"], output_dir=run_dir))
    fit(
        compose_config(
            [*FAST, "trainer.max_epochs=2", "logger=wandb", f"ckpt_path={first['last_checkpoint']}"],
            output_dir=run_dir,
        )
    )
    ids = {WANDB_RUN_FOLDER.match(p.name).group(1) for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(ids) == 1, ids
    (record,) = [r for r in build_report(tmp_path, tmp_path / "report", plot=False)[0].records]
    assert record.complete and sorted(record.curve) == [0, 1]


# -- 4. Hydra's tooling ---------------------------------------------------------------------------------------


def test_every_experiment_and_model_is_an_option_that_globs_see():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        experiments = loader.get_group_options("experiment")
        models = loader.get_group_options("model")
    files = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert experiments == files and len(files) == 20
    assert len(Glob(include=["cifar100_pckd_*"]).filter(experiments)) == 13
    assert len(Glob(include=["cifar100_teacher_*"]).filter(experiments)) == 6
    assert "digits_resnet20_resnet8" in models and "cifar100_resnet32x4_resnet8x4" in models
    assert not [p for p in (CONF_DIR / "experiment").iterdir() if p.is_dir()]  # nothing nested to miss
    assert not [p for p in (CONF_DIR / "model").iterdir() if p.is_dir()]


def test_tab_completion_offers_the_experiments():
    line = "pckd-train experiment=cifar100_pckd_resnet3"
    run = subprocess.run(
        [PCKD_TRAIN, "-sc", "query=bash"],
        env={**env(), "COMP_LINE": line, "COMP_POINT": str(len(line))},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    offered = run.stdout.split()
    assert "experiment=cifar100_pckd_resnet32x4_resnet8x4" in offered, run.stdout + run.stderr
    assert "experiment=cifar100_pckd_resnet56_resnet20" not in offered


def test_the_entry_point_imports_lightning_only_after_hydra_composed():
    code = "import sys, pckd_lightning.train; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


# -- 5. logs that survive a batch system; the dry sweep -----------------------------------------------------


@pytest.mark.slow
def test_a_sweep_with_wandb_gives_grouped_runs_a_report_with_curves_and_epoch_lines(tmp_path):
    args = [
        "-m",
        "distill=ce,kd",
        "seed=0,1",
        "logger=wandb",
        "task_name=dry_sweep",
        "tags=[dry,sweep]",
        "data.image_size=8",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "model.train_teacher_if_missing.max_epochs=1",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    run = subprocess.run(
        [PCKD_TRAIN, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.rglob("summary.json") if p.parent.name != "teacher")
    assert len(jobs) == 4
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        record = next((job / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
        for text in ("dry_sweep", summary["method"], "dry", "sweep", "lr-SGD"):
            assert text.encode() in record, (job, text)
        lines = [line for line in (job / "train.log").read_text().splitlines() if " - epoch " in line]
        lines = lines[-2:]  # the first job's log also holds the demo teacher's epoch, trained first
        assert [line.split(" - ")[1].split()[1] for line in lines] == ["1/2", "2/2"], lines
        assert all("val top-1" in line and " lr " in line for line in lines)
        log = (job / "train.log").read_text()
        assert f"output folder: {job}" in log and "student weights: " in log  # the summary, untruncated
        assert "config:\n" in log and "task_name: dry_sweep" in log  # the resolved config, at the start
        assert "it/s" not in run.stdout + run.stderr  # no progress bar in a log file
    report = build_report(tmp_path, tmp_path / "report")[0]
    assert {m for m, _ in report.curves} == {"student (scratch)", "kd"}  # distill=ce is the scratch row
    assert all(len(curve) == 2 for curve in report.curves.values())
    assert (tmp_path / "report" / "curves.png").stat().st_size > 1000


def test_help_lists_every_method_pair_and_experiment_with_a_description():
    run = subprocess.run(
        [PCKD_TRAIN, "--help"], env=env(), capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for group in ("distill", "model", "experiment", "data"):
        for path in (CONF_DIR / group).glob("*.yaml"):
            line = next((text for text in lines if text.split()[:1] == [path.stem]), None)
            assert line is not None and len(line.split()) > 2, (group, path.stem)  # name + description
    assert "cifar100/pair" not in run.stdout and "model/cifar100" not in run.stdout


@pytest.mark.parametrize(
    ("debug", "key", "value"),
    [
        ("fdr", "fast_dev_run", True),
        ("overfit", "overfit_batches", 3),
        ("limit", "limit_train_batches", 0.02),
        ("profiler", "profiler", "simple"),
    ],
)
def test_the_debug_configs_compose_on_one_cpu_process(debug, key, value):
    cfg = compose_config([f"debug={debug}"])
    assert cfg.trainer[key] == value
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu" and cfg.data.num_workers == 0


@pytest.mark.slow
def test_a_fast_dev_run_is_a_smoke_test_the_report_never_counts(tmp_path):
    fit(compose_config(["debug=fdr", *FAST, "logger=none"], output_dir=tmp_path / "run"))
    (record,) = build_report(tmp_path, tmp_path / "report", plot=False)[0].records
    assert not record.complete and "fast_dev_run" in record.reason


def test_a_value_left_to_fill_is_named_before_any_work(tmp_path):
    from pckd_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.student\.name is required .*model\.student\.name=<value>"):
        fit(compose_config(["model=cifar100_pair", "data=cifar100"], output_dir=tmp_path))


def test_the_local_config_is_optional_and_its_example_composes():
    assert "local" not in compose_config([])  # no conf/local/default.yaml: nothing changes
    cfg = compose_config(["local=example"])
    assert cfg.paths.data_dir == "/path/to/datasets"  # @package _global_: it sets the run's paths


@pytest.mark.slow
def test_a_bad_job_in_a_sweep_fails_alone(tmp_path):
    args = [
        "-m",
        "optimizer.lr=fast,0.05",
        *FAST,
        "trainer.max_epochs=1",
        "logger=none",
        f"paths.log_dir={tmp_path}",
    ]
    run = subprocess.run(
        [PCKD_TRAIN, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600
    )
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert len(summaries) == 1  # the good job ran although the first one failed
    assert "optimizer.lr='fast'" in run.stdout + run.stderr

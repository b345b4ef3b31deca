"""Hydra multiruns: one folder, one summary and one W&B run per job (also side by side, through the joblib
launcher); the Optuna and Slurm configs compose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import CONF_DIR, REPO

TINY = [
    "data.image_size=8",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "callbacks.progress_bar=null",
    "model.train_teacher_if_missing.max_epochs=1",
]


def into(folder: Path) -> list[str]:
    """Outputs and the cached demo teacher go to ``folder``, never into the repository."""
    return [f"paths.log_dir={folder}", f"paths.cache_dir={folder / 'cache'}"]


def pckd_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("pckd-train")), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_a_multirun_gives_each_job_its_folder_and_wandb_run(tmp_path):
    run = pckd_train(["-m", "distill=ce,kd", "seed=0,1", "logger=wandb", *into(tmp_path), *TINY], cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = sorted(tmp_path.rglob("summary.json"))
    jobs = {p.parent for p in summaries if p.parent.name != "teacher"}
    assert len(jobs) == 4, summaries
    for job in jobs:
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1, job


@pytest.mark.slow
def test_the_joblib_launcher_runs_jobs_side_by_side_each_with_its_folder_seed_and_wandb_run(tmp_path):
    run = pckd_train(
        [
            *("-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=wandb"),
            *into(tmp_path),
            *TINY,
        ],
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in run.stdout + run.stderr  # the jobs ran in 2 worker processes
    summaries = [p for p in tmp_path.rglob("summary.json") if p.parent.name != "teacher"]
    assert sorted(json.loads(p.read_text())["seed"] for p in summaries) == [0, 1]
    assert len({p.parent for p in summaries}) == 2
    for summary in summaries:
        assert len(list((summary.parent / "wandb").glob("offline-run-*"))) == 1, summary.parent


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(tmp_path):
    run = pckd_train(
        ["-m", "hparams_search=pckd_optuna", "hydra.sweeper.n_trials=2", *into(tmp_path), *TINY],
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = list(tmp_path.rglob("optimization_results.yaml"))
    assert len(results) == 1
    text = results[0].read_text()
    assert "best_params" in text and "distill.terms.category_contrast.weight" in text


def test_slurm_launcher_config_composes_for_multi_node_ddp():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=submitit_slurm",
                "trainer=ddp",
                "trainer.num_nodes=2",
                "trainer.devices=8",
            ],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2

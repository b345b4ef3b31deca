"""Nothing lost, nothing misreported: one run per folder, honest exit codes, resumes that keep their
history and refuse silent changes, and every config value checked before any work (issue 17)."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from helpers import PCKD_TRAIN, REPO, SCRATCH_RUN, compose_config, pckd_train
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.report.collect import collect_runs
from pckd_lightning.run import fit
from pckd_lightning.run_folder import LOCK_NAME, RunFolder
from pckd_lightning.schema.config import leaves, markdown_table

FAST = [*SCRATCH_RUN, "logger=none"]


def val_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/top1")]


# -- 1. one run per folder -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_get_folders_of_their_own(tmp_path):
    runs = [
        pckd_train(
            [
                *FAST,
                "trainer.max_epochs=1",
                "task_name=twin",
                f"optimizer.lr={lr}",
                f"paths.log_dir={tmp_path}",
            ]
        )
        for lr in (0.05, 0.02)
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    folders = sorted((tmp_path / "twin" / "runs").iterdir())
    assert len(folders) == 2, folders
    lrs = set()
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["output_dir"] == str(folder)
        lrs.add(compose_free_lr(folder / "config.yaml"))
    assert lrs == {0.05, 0.02}
    assert all(r.complete for r in collect_runs(tmp_path))


def compose_free_lr(config: Path) -> float:
    import yaml

    return yaml.safe_load(config.read_text())["optimizer"]["lr"]


def test_a_folder_held_by_a_live_run_is_refused_and_a_stale_lock_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{holder.pid} {os.uname().nodename}\n")
        with pytest.raises(ConfigError, match=rf"in use by another live run \(pid {holder.pid}"):
            fit(compose_config([*FAST, "trainer.max_epochs=1"], output_dir=tmp_path))
        assert not (tmp_path / "config.yaml").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()
    summary = fit(compose_config([*FAST, "trainer.max_epochs=1"], output_dir=tmp_path))  # its pid is gone now
    assert summary["status"] == "complete"
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end


def test_an_unwritable_run_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    folder = RunFolder(blocker / "run")
    with pytest.raises(ConfigError, match=r"cannot write the run folder .*a_file/run.*paths\.log_dir"):
        folder.__enter__()


@pytest.mark.slow
def test_the_report_refuses_a_folder_whose_files_come_from_two_runs(tmp_path):
    a = fit(compose_config([*FAST, "trainer.max_epochs=1"], output_dir=tmp_path / "a"))
    fit(compose_config([*FAST, "trainer.max_epochs=1", "optimizer.lr=0.02"], output_dir=tmp_path / "b"))
    shutil.copy(tmp_path / "b" / "config.yaml", tmp_path / "a" / "config.yaml")  # what the race left behind
    records = {r.run_dir.name: r for r in collect_runs(tmp_path)}
    assert records["b"].complete
    assert not records["a"].complete
    assert "config.yaml was written by another run" in records["a"].reason
    assert "last.ckpt was written by another run" in records["a"].reason
    assert a["config_sha256"] != json.loads((tmp_path / "b" / "summary.json").read_text())["config_sha256"]


# -- 2. signals --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["to_the_run", "to_its_process_group"])
def test_sigterm_saves_a_resumable_checkpoint_marks_the_summary_and_exits_143(tmp_path, to_group):
    """To the run (``timeout``), or to its whole process group as Slurm's scancel and ``kill -- -PGID`` do:
    then the loader's worker dies of it too, and torch's error about it is the same stop."""
    run_dir = tmp_path / "run"
    run = pckd_train(
        [
            *FAST[:-2],
            "logger=none",
            "trainer.max_epochs=200",
            "data.num_workers=1",
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={tmp_path}",
        ],
        start_new_session=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), run.communicate()[1][-3000:]
    if to_group:
        os.killpg(run.pid, signal.SIGTERM)
    else:
        run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 143, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    assert summary["resume_checkpoint"] == str(last)
    assert 1 <= summary["epochs"] < 200
    assert not (run_dir / "student.pth").exists()  # not a finished student
    assert torch.load(last, weights_only=False)["epoch"] == summary["epochs"] - 1
    record = collect_runs(tmp_path)[0]
    assert not record.complete and "interrupted (SIGTERM)" in record.reason


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["on_test_batch_start", "on_train_epoch_end"])
def test_a_run_stopped_after_its_last_epoch_writes_the_trained_student_not_a_resume(tmp_path, hook):
    """SIGTERM in the final test of a holdout run, or as the last epoch ends (Lightning stops after counting
    it): nothing is left to train, so the summary points at the exported student (a resume of its last.ckpt
    would be refused as finished)."""
    holdout = ["data.val_source=holdout", "data.holdout_per_class=1", "+trainer.limit_test_batches=2"]
    overrides = [*FAST, *holdout, "trainer.max_epochs=1", "+callbacks.signal._target_=helpers.SignalAt"]
    with pytest.raises(SystemExit) as stop:
        fit(compose_config([*overrides, f"+callbacks.signal.hook={hook}"], output_dir=tmp_path))
    assert stop.value.code == 143
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == 1
    assert summary["resume_checkpoint"] is None and summary["student_weights"] == str(
        tmp_path / "student.pth"
    )
    exported = torch.load(tmp_path / "student.pth", weights_only=True)["model"]
    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert exported and all(torch.equal(v, trained[f"student.{k}"]) for k, v in exported.items())


@pytest.mark.slow
def test_a_resume_stopped_before_training_restarts_leaves_the_folder_as_it_was(tmp_path):
    """Ctrl-C while a resume starts (the teacher is measured again, say): the finished run's summary and
    config stay, nothing is set aside, and the message names the same resume."""
    fit(compose_config([*FAST, "trainer.max_epochs=1"], output_dir=tmp_path))
    before = {name: (tmp_path / name).read_text() for name in ("summary.json", "config.yaml")}
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    stop = ["+callbacks.signal._target_=helpers.SignalAt", "+callbacks.signal.hook=on_fit_start"]
    overrides = [*FAST, "trainer.max_epochs=2", f"ckpt_path={ckpt}", *stop, "+callbacks.signal.signum=SIGINT"]
    try:
        with pytest.raises(SystemExit) as stopped:
            fit(compose_config(overrides, output_dir=tmp_path))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one
    assert stopped.value.code == 130
    assert {name: (tmp_path / name).read_text() for name in before} == before
    assert not (tmp_path / "summary.previous.json").exists()


# -- 3. and 4. resumes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A finished 2-epoch run, copied by each test that resumes it."""
    folder = tmp_path_factory.mktemp("two_epochs") / "run"
    fit(compose_config([*FAST, "trainer.max_epochs=2"], output_dir=folder))
    return folder


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target / "checkpoints" / "last.ckpt"


def test_resuming_a_finished_run_is_refused_and_its_summary_kept(two_epochs, tmp_path):
    """Lightning would train nothing and validate nothing: the new summary would replace the result with nulls."""
    run_dir = tmp_path / "run"
    ckpt = copy_run(two_epochs, run_dir)
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(ConfigError, match=r"has trained all 2 epochs \(trainer\.max_epochs=2\).*above 2"):
        fit(compose_config([*FAST, "trainer.max_epochs=2", f"ckpt_path={ckpt}"], output_dir=run_dir))
    assert (run_dir / "summary.json").read_text() == before
    assert not (run_dir / "summary.previous.json").exists()


def test_a_resume_with_a_changed_hyperparameter_is_refused_naming_the_key(two_epochs, tmp_path):
    ckpt = copy_run(two_epochs, tmp_path / "run")
    resume = [*FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"]
    with pytest.raises(
        ConfigError, match=r"optimizer\.lr: 0\.05 -> 0\.5.*start a new run to change \['optimizer\.lr'\]"
    ):
        fit(compose_config([*resume, "optimizer.lr=0.5"], output_dir=tmp_path / "new"))
    with pytest.raises(ConfigError, match=r"cannot allow \['optimizer\.lr'\].*override"):
        fit(
            compose_config(
                [*resume, "optimizer.lr=0.5", "resume.allow_changes=[optimizer.lr]"],
                output_dir=tmp_path / "new",
            )
        )
    assert not (tmp_path / "new").exists()  # refused before any work


def test_an_allowed_change_is_applied_and_recorded(two_epochs, tmp_path):
    ckpt = copy_run(two_epochs, tmp_path / "run")
    overrides = [
        *FAST,
        "trainer.max_epochs=3",
        f"ckpt_path={ckpt}",
        "distill.terms.ce.weight=0.5",
        "resume.allow_changes=[distill.terms.ce]",
    ]
    summary = fit(compose_config(overrides, output_dir=tmp_path / "new"))
    assert summary["terms"] == {"ce": 0.5}  # what trained
    assert summary["resumed_from"]["changed"] == {"distill.terms.ce.weight": {"checkpoint": 1.0, "run": 0.5}}
    assert summary["resumed_from"]["completed_epochs"] == 2


def test_resuming_in_its_own_folder_keeps_the_metric_history(two_epochs, tmp_path):
    run_dir = tmp_path / "run"
    ckpt = copy_run(two_epochs, run_dir)
    summary = fit(compose_config([*FAST, "trainer.max_epochs=4", f"ckpt_path={ckpt}"], output_dir=run_dir))
    assert val_epochs(run_dir) == [0, 1, 2, 3]
    assert summary["epochs"] == 4
    (record,) = collect_runs(run_dir)
    assert record.complete and sorted(record.curve) == [0, 1, 2, 3]


def test_resuming_into_a_new_folder_carries_the_earlier_rows(two_epochs, tmp_path):
    ckpt = copy_run(two_epochs, tmp_path / "run")
    fit(compose_config([*FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"], output_dir=tmp_path / "new"))
    assert val_epochs(tmp_path / "new") == [0, 1, 2]


def test_a_resume_continues_in_the_checkpoints_run_folder():
    from pckd_lightning.resolvers import run_dir

    assert run_dir("/out/x/runs", "/out/x/runs/2026_abc/checkpoints/last.ckpt") == "/out/x/runs/2026_abc"
    fresh = run_dir("/out/x/runs", None)
    assert fresh.startswith("/out/x/runs/") and fresh == run_dir("/out/x/runs", None)  # one launch, one id


# -- 5. every value checked before any work -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "module.lr_scaling=linaer",
            r"module\.lr_scaling='linaer' is not a valid choice: expected one of 'none', 'linear'",
        ),
        ("data.batch_size=abc", r"data\.batch_size='abc' is a str: expected an int >= 1"),
        ("optimizer.lr=fast", r"optimizer\.lr='fast' is a str: expected a number > 0"),
        ("seed=1.5", r"seed=1\.5 is a float: expected an int"),
        (
            "distill.preview.base=1.5",
            r"base=1\.5 gives the threshold 1\.5\^240.*valid range is 0 < base <= 1\.44",
        ),
        (
            "distill.terms.kd.temperature=0",
            r"distill\.terms\.kd\.temperature=0 is out of range: expected a number > 0",
        ),
        ("distill.views=0", r"^1 bad config value\(s\):\n  distill\.views=0 is out of range"),
        ("trainer.max_epochs=-1", r"trainer\.max_epochs=-1 is out of range: expected an int >= 1"),
    ],
)
def test_a_bad_value_is_refused_before_any_work_naming_key_value_and_range(tmp_path, override, message):
    schedule = ["++distill.preview.schedule=progress"] if override.startswith("distill.preview") else []
    cfg = compose_config(
        [override, *schedule], output_dir=tmp_path / "run"
    )  # the demo: it would train a teacher first
    with pytest.raises(ConfigError, match=message):
        fit(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run" / "cache").exists()


@pytest.mark.parametrize(
    "strategy",
    [
        "ddp_spawn",
        "ddp_notebook",
        "ddp_fork_find_unused_parameters_true",
        {"_target_": "lightning.pytorch.strategies.DDPStrategy", "start_method": "spawn"},
    ],
)
def test_a_strategy_whose_workers_this_process_starts_is_refused_before_any_work(tmp_path, strategy):
    """Under ddp_spawn the launching process does not train: measured, its summary said 0 epochs and its
    CSV logger overwrote the workers' metrics.csv with one header line."""
    cfg = compose_config(["trainer=ddp_cpu"], output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.trainer.strategy = strategy
    with pytest.raises(
        ConfigError, match=r"starts its DDP workers from this process.*Use trainer\.strategy=ddp"
    ):
        fit(cfg)
    assert not (tmp_path / "run").exists()


def test_strategies_that_start_one_process_per_device_pass_the_check():
    from pckd_lightning.run.check import check_strategy

    for strategy in ("ddp", "auto", "ddp_find_unused_parameters_true", None):
        check_strategy(OmegaConf.create({"strategy": strategy}))
    check_strategy(OmegaConf.create({"strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy"}}))


def test_all_term_weights_zero_is_refused(tmp_path):
    overrides = [
        "distill.terms.ce.weight=0",
        "distill.terms.kd.weight=0",
        "distill.terms.category_contrast.weight=0",
        "distill.terms.center_align.weight=0",
        "distill.terms.feature_align.weight=0",
    ]
    with pytest.raises(ConfigError, match=r"no term has a weight > 0"):
        fit(compose_config(overrides, output_dir=tmp_path))


def test_the_docs_table_lists_every_checked_key():
    text = (REPO / "docs" / "config-checks.md").read_text()
    assert markdown_table() in text
    assert all(f"`{key}`" in text for key, _ in leaves())


# -- 6. one clean message, exit 2 -------------------------------------------------------------------------


@pytest.mark.slow
def test_library_errors_print_one_message_and_exit_2(tmp_path):
    run = pckd_train(["lr_scaling=linaer", f"paths.log_dir={tmp_path}"])
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2
    assert "Traceback" not in out + err and "Set the environment variable HYDRA_FULL_ERROR" not in err
    assert "pckd-train: error: 1 bad config value(s)" in err and "lr_scaling='linaer'" in err
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    full = subprocess.run(
        [PCKD_TRAIN, "lr_scaling=linaer", f"paths.log_dir={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert full.returncode != 0 and "Traceback" in full.stderr


# -- 7. no teacher trained at a typo's path ---------------------------------------------------------------


def test_a_missing_teacher_outside_the_cache_is_an_error_not_a_new_teacher(tmp_path):
    typo = tmp_path / "teachres" / "resnet20.pth"
    cfg = compose_config([f"model.teacher.checkpoint={typo}"], output_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"does not exist.*cache file.*export_path="):
        fit(cfg)
    assert not typo.exists() and not (tmp_path / "run" / "teacher").exists()


def test_a_resume_in_another_precision_or_global_batch_is_refused(two_epochs, tmp_path):
    ckpt = copy_run(two_epochs, tmp_path / "run")
    resume = [*FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"]
    with pytest.raises(ConfigError, match=r"trainer\.precision: '32-true' -> 'bf16-mixed'"):
        fit(compose_config([*resume, "trainer.precision=bf16-mixed"], output_dir=tmp_path / "new"))
    with pytest.raises(ConfigError, match=r"trainer\.accumulate_grad_batches: None -> 2"):
        fit(compose_config([*resume, "+trainer.accumulate_grad_batches=2"], output_dir=tmp_path / "new"))


def test_a_slurm_requeue_resumes_in_its_folder_with_its_history(two_epochs, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    copy_run(two_epochs, run_dir)
    # what Lightning's requeue leaves: hpc_ckpt_<n>.ckpt in the run folder, and the job's own lock
    shutil.move(run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (run_dir / LOCK_NAME).write_text("1 another-node 4242\n")
    summary = fit(compose_config([*FAST, "trainer.max_epochs=3"], output_dir=run_dir))
    assert summary["resumed_from"]["checkpoint"] == str(run_dir / "hpc_ckpt_1.ckpt")
    assert summary["epochs"] == 3 and val_epochs(run_dir) == [0, 1, 2]
    assert (run_dir / "summary.previous.json").is_file()  # the earlier result, set aside


def test_a_checkpoint_saved_inside_an_epoch_has_not_completed_it(tmp_path):
    """Slurm's requeue checkpoint is saved inside an epoch: the resume records the epochs completed before it,
    and the epoch's rows logged after the save are not carried into the resumed run's log."""
    run_dir = tmp_path / "run"
    inside = run_dir / "checkpoints" / "inside.ckpt"
    save = ["+callbacks.save._target_=helpers.SaveAt", "+callbacks.save.epoch=1", "+callbacks.save.batch=0"]
    fit(compose_config([*FAST, "trainer.max_epochs=2", *save, f"+callbacks.save.path={inside}"], run_dir))
    assert val_epochs(run_dir) == [0, 1]  # the finished run logged its epoch 1 after the save
    resume = [*FAST, "trainer.max_epochs=2", f"ckpt_path={inside}"]
    summary = fit(compose_config(resume, output_dir=tmp_path / "resumed"))
    assert summary["resumed_from"]["completed_epochs"] == 1
    assert summary["epochs"] == 2 and val_epochs(tmp_path / "resumed") == [0, 1]


def _before_the_group_homes(old: dict) -> dict:
    """``old`` as configs were written before each group's settings had one home (issue 25): the distill
    section with a view_recipe only where the method set one, no image_size in CIFAR-100's data section, no
    scheduler key without a scheduler, no lr_milestones without a recipe."""
    if old["distill"].get("view_recipe") == "rotation":
        del old["distill"]["view_recipe"]
    if "CIFAR100" in old["data"]["_target_"]:
        del old["data"]["image_size"]
    if old.get("scheduler") is None:
        old.pop("scheduler", None)
    if old.get("lr_milestones") == []:
        del old["lr_milestones"]
    return old


def _as_an_earlier_version_wrote_it(cfg) -> dict:
    """The resolved config of the same run as versions before the DistillStep wrote it: the preview weights
    built as a callback with its base only, +preview=true's marks on the terms, no module group (its settings
    top-level blocks)."""
    from omegaconf import OmegaConf

    old = OmegaConf.to_container(cfg, resolve=True)
    module = old.pop("module")
    old |= {"lr_scaling": module["lr_scaling"], "performance": module["performance"]}
    old["teacher"] = module["teacher_options"]
    distill = old["distill"]
    if distill.get("preview") is not None:
        distill["preview"] = {"_target_": "pckd_lightning.callbacks.PreviewWeighting", "base": 1.005}
    if distill.pop("preview_every_term", False):
        old["preview"] = True
        for name, term in distill["terms"].items():
            if name != "ce":
                term["preview"] = True
    return _before_the_group_homes(old)


@pytest.mark.parametrize(
    ("overrides", "marked"),
    [(["distill=pckd"], {"kd", "category_contrast"}), (["distill=dkd", "+preview=all"], {"dkd"})],
)
def test_a_checkpoint_of_an_earlier_version_resumes_and_reports_as_the_same_run(overrides, marked, tmp_path):
    from omegaconf import OmegaConf

    from pckd_lightning.resume import changed_keys
    from pckd_lightning.run_folder import read_run_config
    from pckd_lightning.upgrades import upgrade_config

    cfg = compose_config(overrides, output_dir=tmp_path)
    current = OmegaConf.to_container(cfg, resolve=True)
    old = _as_an_earlier_version_wrote_it(cfg)
    assert changed_keys(old, current) == {}
    upgraded = upgrade_config(current)
    assert {n for n, t in upgraded["distill"]["terms"].items() if t and t.get("preview")} == marked
    assert upgraded["distill"]["preview"]["_target_"] == "pckd_lightning.preview.PreviewWeights"
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    assert read_run_config(tmp_path / "config.yaml")["distill"] == upgraded["distill"]
    # and what really differs is still named: another base, a preview weighting switched on
    changed = _as_an_earlier_version_wrote_it(cfg)
    changed["distill"]["preview"]["base"] = 1.01
    assert "distill.preview.base" in changed_keys(changed, current)
    plain = OmegaConf.to_container(compose_config(["distill=dkd"], output_dir=tmp_path), resolve=True)
    switched_on = changed_keys(
        plain,
        OmegaConf.to_container(
            compose_config(["distill=dkd", "+preview=all"], output_dir=tmp_path), resolve=True
        ),
    )
    assert {"distill.terms.dkd.preview", "distill.preview.base"} <= set(switched_on)


def test_each_upgrade_of_an_earlier_config_warns_naming_what_it_changed_and_a_current_one_none(
    tmp_path, caplog
):
    from omegaconf import OmegaConf

    from pckd_lightning.upgrades import UPGRADES, upgrade_config

    cfg = compose_config(["distill=dkd", "+preview=all"], output_dir=tmp_path)
    current = OmegaConf.to_container(cfg, resolve=True)
    with caplog.at_level("WARNING", logger="pckd_lightning.upgrades"):
        upgrade_config(current)
        assert caplog.records == []  # this version's +preview=all is spelt out without a word
        upgraded = upgrade_config(_as_an_earlier_version_wrote_it(cfg), source="old/config.yaml")
        messages = [record.getMessage() for record in caplog.records]
        assert len(messages) == len(UPGRADES)  # one per step, in order
        for upgrade, message in zip(UPGRADES, messages, strict=True):
            assert "old/config.yaml" in message and upgrade.name in message and upgrade.changes in message
        caplog.clear()
        upgrade_config(upgraded)
        assert caplog.records == []  # an upgraded config is this version's


def _as_main_5ca28de_wrote_it(cfg, pair_settings: dict) -> dict:
    """The resolved config of the same run as main wrote it before each setting had one home (issue 25): the
    module's settings also as top-level blocks (module.* pointed at them), trainer.sync_batchnorm in the DDP
    trainers, the pair's method settings and lr in the model config, the preview weights built from
    pckd_lightning.losses."""
    old = OmegaConf.to_container(cfg, resolve=True)
    old["model"] |= pair_settings
    module = old["module"]
    old |= {"lr_scaling": module["lr_scaling"], "performance": module["performance"]}
    old["teacher"] = module["teacher_options"]
    if module["sync_batchnorm"]:
        old["trainer"]["sync_batchnorm"] = True
    for preview in (old["distill"]["preview"], module["preview"]):
        if preview is not None:
            preview["_target_"] = "pckd_lightning.losses.PreviewWeights"
    return _before_the_group_homes(old)


@pytest.mark.parametrize(
    ("overrides", "pair_settings"),
    [
        (["distill=pckd", "trainer=ddp_cpu"], {}),
        (
            [
                "distill=dkd",
                "+preview=all",
                "module.lr_scaling=linear",
                "module.teacher_options.float32=true",
            ],
            {},
        ),
        (
            ["experiment=cifar100_pckd_vgg13_MobileNetV2", "distill=kd_ls"],
            {"dkd_beta": 6, "ls_temperature": 3.0, "lr": 0.01},
        ),
    ],
)
def test_a_checkpoint_of_main_before_one_home_each_resumes_and_reports_as_the_same_run(
    overrides, pair_settings, tmp_path
):
    from pckd_lightning.resume import changed_keys
    from pckd_lightning.upgrades import upgrade_config

    cfg = compose_config(overrides, output_dir=tmp_path)
    current = OmegaConf.to_container(cfg, resolve=True)
    old = _as_main_5ca28de_wrote_it(cfg, pair_settings)
    assert changed_keys(old, current) == {}
    assert upgrade_config(old) == upgrade_config(current)
    old["lr_scaling"] = "none" if old["lr_scaling"] == "linear" else "linear"  # what differs is still named
    assert set(changed_keys(old, current)) == {"module.lr_scaling"}


def test_a_resume_records_a_setting_that_acts_otherwise_not_one_spelt_otherwise(tmp_path):
    """limit_train_batches 1.0 -> 1 is every batch -> one batch (1.0 == 1 in Python); a key an older config
    lacks is at its default, so setting that default explicitly changes nothing."""
    from pckd_lightning.resume import recorded_changes

    current = OmegaConf.to_container(compose_config([], output_dir=tmp_path), resolve=True)
    old = OmegaConf.to_container(compose_config([], output_dir=tmp_path), resolve=True)
    old["trainer"]["limit_train_batches"] = 1.0
    new = {**current, "trainer": {**current["trainer"], "limit_train_batches": 1}}
    assert recorded_changes(old, new) == {"trainer.limit_train_batches": {"checkpoint": 1.0, "run": 1}}
    old["trainer"].pop("check_val_every_n_epoch", None)  # written before the key was
    explicit = {**current, "trainer": {**current["trainer"], "check_val_every_n_epoch": 1}}
    del old["trainer"]["limit_train_batches"]
    assert recorded_changes(old, explicit) == {}


def test_the_earlier_spellings_of_the_modules_settings_compose_to_the_same_run(tmp_path, caplog):
    from pckd_lightning.upgrades import upgrade_overrides

    old = [
        "lr_scaling=linear",
        "performance.compile=true",
        "teacher.min_accuracy=50",
        "+trainer.sync_batchnorm=true",
    ]
    new = [
        "module.lr_scaling=linear",
        "module.performance.compile=true",
        "module.teacher_options.min_accuracy=50",
        "module.sync_batchnorm=true",
    ]
    with caplog.at_level(logging.WARNING):
        assert upgrade_overrides(old) == new
    assert all(f"is spelt {spelling} now" in caplog.text for spelling in new)
    assert compose_config(upgrade_overrides(old), output_dir=tmp_path) == compose_config(
        new, output_dir=tmp_path
    )

"""Every number a run writes is the one it claims (issue 23): the final weights' accuracy, the teacher it
was distilled from, one teacher per seed sweep, loss terms logged on one documented scale."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only

import pckd_lightning
from helpers import QUIET, SCRATCH_RUN, compose_config, save_teacher, two_step_run
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.loggers import EpochLineLogger
from pckd_lightning.models import create_model
from pckd_lightning.report.collect import resume_note
from pckd_lightning.run import fit
from pckd_lightning.run.build import instantiate
from pckd_lightning.run.origin import code_version
from pckd_lightning.run.summary import aug_stream
from pckd_lightning.run.teacher import teacher_to_train, teacher_training_config


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@torch.inference_mode()
def accuracy_of(student_pth: str, cfg) -> float:
    """The validation top-1 of an exported student, computed here from its weights alone."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = create_model(cfg.model.student.name, num_classes=datamodule.num_classes)
    model.load_state_dict(torch.load(student_pth, weights_only=True)["model"])
    model.eval()
    correct = total = 0
    for images, labels, *_ in datamodule.val_dataloader():
        correct += (model(images).argmax(1) == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / total


# -- 1. the last accuracy is the final weights' -----------------------------------------------------------


@pytest.mark.slow
def test_the_final_epoch_is_validated_whatever_check_val_every_n_epoch_says(tmp_path):
    """Epochs 2 and 3 of 3 are validated with check_val_every_n_epoch=2: last_top1 is the final student's."""
    overrides = [*SCRATCH_RUN[:-1], *QUIET, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    cfg = compose_config(overrides, output_dir=tmp_path)
    summary = fit(cfg)
    validated = sorted({int(r["epoch"]) for r in metric_rows(tmp_path) if r.get("val/top1")})
    assert validated == [1, 2]  # 0-indexed: epochs 2 and 3
    assert summary["last_top1_epoch"] == summary["epochs"] == 3
    assert summary["last_top1"] == pytest.approx(accuracy_of(summary["student_weights"], cfg), abs=1e-3)


def test_an_epoch_without_validation_says_so_instead_of_repeating_an_old_value(caplog):
    lines = EpochLineLogger(max_epochs=3)
    with caplog.at_level(logging.INFO, logger="pckd_lightning.progress"):
        lines.log_metrics({"val/top1": 66.11, "val/top1_best": 66.11, "epoch": 1}, step=10)
        lines.log_metrics({"train/loss": 1.0, "epoch": 1}, step=10)
        lines.log_metrics({"train/loss": 0.9, "epoch": 2}, step=15)
    first, second = caplog.messages
    assert "val top-1 66.11%" in first
    assert "66.11" not in second and "no validation this epoch" in second


# -- 2. a resume with another teacher ---------------------------------------------------------------------


def other_teacher(path: Path) -> Path:
    torch.manual_seed(1)  # not save_teacher's seed: another file, other weights
    torch.save({"model": create_model("resnet20", num_classes=10).state_dict()}, path)
    return path


@pytest.mark.slow
def test_a_resume_with_another_teacher_is_refused_or_measured_again_and_recorded(tmp_path):
    first, second = save_teacher(tmp_path / "a.pth", "resnet20", 10), other_teacher(tmp_path / "b.pth")
    common = ["distill=kd", "data.image_size=8", "+trainer.limit_train_batches=2", *QUIET]
    run = fit(
        compose_config(
            [*common, f"model.teacher.checkpoint={first}", "trainer.max_epochs=1"], output_dir=tmp_path / "a"
        )
    )
    fresh_b = fit(
        compose_config(
            [*common, f"model.teacher.checkpoint={second}", "trainer.max_epochs=1"], output_dir=tmp_path / "b"
        )
    )
    assert fresh_b["teacher_top1"] != run["teacher_top1"]  # else the test could not tell them apart
    resume = [*common, f"model.teacher.checkpoint={second}", "trainer.max_epochs=2"]
    resume.append(f"ckpt_path={run['last_checkpoint']}")
    with pytest.raises(
        ConfigError, match=r"a\.pth \(sha256 \w{12}\).*b\.pth \(sha256 \w{12}\).*allow_changes"
    ):
        fit(compose_config(resume, output_dir=tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    allowed = [*resume, "resume.allow_changes=[model.teacher.checkpoint]"]
    resumed = fit(compose_config(allowed, output_dir=tmp_path / "resumed"))
    assert resumed["teacher_top1"] == fresh_b["teacher_top1"]  # measured again, not the checkpoint's
    assert resumed["teacher_sha256"] == fresh_b["teacher_sha256"] != run["teacher_sha256"]
    changed = resumed["resumed_from"]["changed"]["model.teacher.checkpoint"]
    assert "a.pth" in changed["checkpoint"] and "b.pth" in changed["run"]
    # resumed once more with teacher b: nothing changes against the checkpoint, but the run keeps its history
    again = [*resume[:-2], "trainer.max_epochs=3", f"ckpt_path={resumed['last_checkpoint']}"]
    twice = fit(compose_config(again, output_dir=tmp_path / "twice"))
    assert twice["resumed_from"]["changed"] == {}
    first_run, first_resume, second_resume = twice["segments"]
    assert first_run == {"code": run["code"]}
    assert first_resume["changed"] == resumed["resumed_from"]["changed"] and second_resume["changed"] == {}
    assert [s["completed_epochs"] for s in (first_resume, second_resume)] == [1, 2]
    assert resume_note(twice).startswith("resumed with changes: model.teacher.checkpoint=")


@pytest.mark.slow
def test_a_resume_with_the_same_teacher_file_moved_elsewhere_is_no_change(tmp_path):
    teacher = save_teacher(tmp_path / "a.pth", "resnet20", 10)
    common = ["distill=kd", "data.image_size=8", "+trainer.limit_train_batches=2", *QUIET]
    run = fit(
        compose_config(
            [*common, f"model.teacher.checkpoint={teacher}", "trainer.max_epochs=1"], tmp_path / "a"
        )
    )
    checkpoint = torch.load(run["last_checkpoint"], weights_only=False)
    checkpoint["teacher"]["val_top1"] = 1.0  # not what a resume reports: it measures the teacher again
    torch.save(checkpoint, run["last_checkpoint"])
    moved = shutil.copy(teacher, tmp_path / "moved.pth")
    resumed = fit(
        compose_config(
            [
                *common,
                f"model.teacher.checkpoint={moved}",
                "trainer.max_epochs=2",
                f"ckpt_path={run['last_checkpoint']}",
            ],
            output_dir=tmp_path / "resumed",
        )
    )
    assert resumed["resumed_from"]["changed"] == {}
    assert resumed["teacher_top1"] == run["teacher_top1"]
    assert run["finished_at"] < resumed["finished_at"]  # ISO 8601 in UTC: the rerun is the later
    # a setting a resume may change that still shapes the numbers is recorded (and the teacher measured again)
    recorded = fit(
        compose_config(
            [
                *common,
                f"model.teacher.checkpoint={teacher}",
                "trainer.max_epochs=2",
                "trainer.check_val_every_n_epoch=2",
                f"ckpt_path={run['last_checkpoint']}",
            ],
            output_dir=tmp_path / "recorded",
        )
    )
    assert recorded["resumed_from"]["changed"] == {
        "trainer.check_val_every_n_epoch": {"checkpoint": 1, "run": 2}
    }
    # a teacher path that no longer exists is another teacher (the demo's recipe would train a new one there)
    missing = [*common, f"model.teacher.checkpoint={tmp_path / 'gone.pth'}", "trainer.max_epochs=2"]
    with pytest.raises(
        ConfigError, match=r"a\.pth \(sha256 \w{12}\).*gone\.pth \(no such file\).*allow_changes"
    ):
        fit(compose_config([*missing, f"ckpt_path={run['last_checkpoint']}"], tmp_path / "missing"))


@pytest.mark.slow
def test_a_resume_on_another_world_size_is_refused_and_leaves_the_finished_run_as_it_was(tmp_path):
    """devices=-1 on a machine with other GPUs: the checkpoint says 2 processes, this run has 1. The refusal
    comes before training starts, so the finished run's summary and config stay in place."""
    teacher = save_teacher(tmp_path / "a.pth", "resnet20", 10)
    common = ["distill=kd", "data.image_size=8", "+trainer.limit_train_batches=2", *QUIET]
    common.append(f"model.teacher.checkpoint={teacher}")
    run = fit(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "run"))
    checkpoint = torch.load(run["last_checkpoint"], weights_only=False)
    assert checkpoint["world_size"] == 1
    torch.save({**checkpoint, "world_size": 2}, run["last_checkpoint"])
    before = {name: (tmp_path / "run" / name).read_text() for name in ("summary.json", "config.yaml")}
    longer = [*common, "trainer.max_epochs=2", f"ckpt_path={run['last_checkpoint']}"]
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), this run has 1.*allow_changes"):
        fit(compose_config(longer, tmp_path / "run"))
    assert {name: (tmp_path / "run" / name).read_text() for name in before} == before
    assert not (tmp_path / "run" / "summary.previous.json").exists()
    with pytest.raises(ConfigError, match=r"lr_scaling=linear scales the lr by that count"):
        linear = ["module.lr_scaling=linear", "resume.allow_changes=[module.lr_scaling,trainer.devices]"]
        fit(compose_config([*longer, *linear], tmp_path / "run"))
    allowed = fit(compose_config([*longer, "resume.allow_changes=[trainer.devices]"], tmp_path / "run"))
    assert allowed["resumed_from"]["changed"]["world_size"] == {"checkpoint": 2, "run": 1}
    assert allowed["segments"][-1]["changed"]["world_size"] == {"checkpoint": 2, "run": 1}
    assert json.loads((tmp_path / "run" / "summary.previous.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_a_resume_into_another_folder_keeps_the_best_checkpoints_score(tmp_path):
    """Lightning drops the best score when the checkpoint folder changes; the first validation after the
    resume must not become the best checkpoint when the earlier best is higher (here set out of reach)."""
    run = fit(compose_config([*SCRATCH_RUN, *QUIET, "trainer.max_epochs=1"], tmp_path / "a"))
    checkpoint = torch.load(run["last_checkpoint"], weights_only=False)
    (key,) = [
        k for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint") and v["monitor"]
    ]
    checkpoint["callbacks"][key]["best_model_score"] = torch.tensor(100.0)
    torch.save(checkpoint, run["last_checkpoint"])
    resume = [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=2", f"ckpt_path={run['last_checkpoint']}"]
    resumed = fit(compose_config(resume, tmp_path / "b"))
    assert resumed["best_checkpoint"] == run["best_checkpoint"]  # still the earlier folder's best
    assert not list((tmp_path / "b" / "checkpoints").glob("best-*.ckpt"))
    # the run folder moved: its best file moved with it, and is the one named
    shutil.move(tmp_path / "a", tmp_path / "moved")
    moved = tmp_path / "moved" / "checkpoints"
    again = [*SCRATCH_RUN, *QUIET, "trainer.max_epochs=2", f"ckpt_path={moved / 'last.ckpt'}"]
    resumed = fit(compose_config(again, tmp_path / "moved"))
    assert resumed["best_checkpoint"] == str(moved / Path(run["best_checkpoint"]).name)


# -- 4. one teacher for a sweep over the student's seed ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_demo_teacher_has_its_own_seed_so_a_seed_sweep_shares_it(tmp_path, seed):
    cfg = compose_config([f"seed={seed}"], output_dir=tmp_path)
    assert Path(cfg.model.teacher.checkpoint).name == "digits_resnet20_seed0_e15.pth"
    teacher_cfg = teacher_training_config(cfg)
    assert teacher_cfg.seed == 0 and teacher_cfg.data.seed == 0
    other = compose_config([f"seed={seed}", "model.train_teacher_if_missing.seed=3"], output_dir=tmp_path)
    assert Path(other.model.teacher.checkpoint).name == "digits_resnet20_seed3_e15.pth"
    assert teacher_training_config(other).seed == 3
    streams = compose_config([f"seed={seed}", "data.aug_seed=5"], output_dir=tmp_path)
    assert teacher_training_config(streams).data.aug_seed == 0  # nor the student's augmentation stream


def test_the_summary_says_whether_the_augmentation_stream_followed_the_seed(tmp_path):
    """The resolved config cannot tell a sweep's shared data.aug_seed=0 from seed 0's own stream; the
    summary can (pckd-report keeps a shared stream's runs in a row of their own)."""
    follows = compose_config(["seed=0"], output_dir=tmp_path)
    assert aug_stream(follows.data) == "seed"
    assert aug_stream(compose_config(["seed=0", "data.aug_seed=0"], output_dir=tmp_path).data) == "shared"
    assert aug_stream(compose_config(["data.aug_seed=null"], output_dir=tmp_path).data) == "loader"
    summary, _ = two_step_run(tmp_path / "shared", "ce", "data.aug_seed=0", "seed=0")
    assert summary["aug_stream"] == "shared"
    summary, _ = two_step_run(tmp_path / "own", "ce", "seed=0")
    assert summary["aug_stream"] == "seed"  # the config is not resolved in place before the summary


@pytest.mark.parametrize(
    "shortening",
    ["+trainer.limit_train_batches=1", "+trainer.max_steps=3", "+trainer.fast_dev_run=true"],
)
def test_a_shortened_run_caches_its_demo_teacher_apart(tmp_path, shortening):
    """A teacher trained on a few batches is never the one a full run finds (one batch is the int 1)."""
    full = Path(compose_config([], output_dir=tmp_path).model.teacher.checkpoint)
    names = {
        Path(compose_config([shortening, f"seed={s}"], output_dir=tmp_path).model.teacher.checkpoint).name
        for s in (0, 1)
    }
    (name,) = names  # one teacher for a seed sweep of the same shortened runs
    assert name.startswith("digits_resnet20_seed0_e15_short-") and name != full.name
    for same_as_full in (
        "+trainer.limit_train_batches=1.0",
        "+trainer.fast_dev_run=false",
        "+trainer.max_steps=-1",
        "+trainer.limit_val_batches=0.5",  # the exported weights are the last training epoch's,
        "+trainer.limit_test_batches=2",  # whatever validation and testing read
    ):
        assert Path(compose_config([same_as_full], output_dir=tmp_path).model.teacher.checkpoint) == full


@pytest.mark.slow
def test_a_cached_teacher_records_its_recipe_and_a_run_with_other_settings_is_warned(
    tmp_path, caplog, monkeypatch
):
    """The teacher a shortened run trains is cached under its own name with what made it; a run that would
    train it otherwise (another image size) is told what differs, a run with the same settings is not."""
    overrides = ["trainer.max_epochs=1", "model.train_teacher_if_missing.max_epochs=1", *QUIET]
    short = ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]
    run = tmp_path / "short"
    summary = fit(compose_config([*overrides, *short, "data.image_size=8"], output_dir=run))
    cached = Path(summary["teacher_checkpoint"])
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name, f"{cached.stem}.recipe.json"]
    assert "_short-" in cached.name
    recorded = json.loads((cached.parent / f"{cached.stem}.recipe.json").read_text())
    assert recorded["data.image_size"] == 8 and recorded["trainer.limit_train_batches"] == 1
    assert recorded["model.teacher"] == "resnet20" and recorded["trainer.max_epochs"] == 1
    full = compose_config([*overrides, "data.image_size=8"], output_dir=run)
    assert Path(full.model.teacher.checkpoint) != cached  # a full run trains its own
    caplog.clear()
    caplog.set_level(logging.INFO, logger="pckd_lightning.run.teacher")
    # the same settings, some spelt otherwise: Lightning's short precision, clipping off by a 0
    same = [*short, "data.image_size=8", "trainer.precision=32", "+trainer.gradient_clip_val=0"]
    assert teacher_to_train(compose_config([*overrides, *same], output_dir=run)) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        teacher_to_train(compose_config([*overrides, *short, "data.image_size=16"], output_dir=run)) is None
    )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "data.image_size: 8 -> 16" in warning and "Delete it" in warning
    caplog.clear()  # the holdout's size is no change while validation reads the test split, recorded or not
    recipe = cached.parent / f"{cached.stem}.recipe.json"
    recipe.write_text(json.dumps(recorded | {"data.holdout_per_class": 50}))  # as the previous version wrote
    assert teacher_to_train(compose_config([*overrides, *same, "data.holdout_per_class=7"], run)) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    holdout = compose_config([*overrides, *same, "data.val_source=holdout", "data.holdout_per_class=7"], run)
    with monkeypatch.context() as m:  # a DDP rank other than 0 finds the same teacher: one warning per run
        m.setattr(rank_zero_only, "rank", 1)
        assert teacher_to_train(holdout) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert teacher_to_train(holdout) is None
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        "data.val_source: 'test' -> 'holdout'" in warning and "data.holdout_per_class: None -> 7" in warning
    )
    for text, reason in (
        ("[]", "recorded by another version"),
        ('{"data.image_size": 8}', "recorded by another version"),
        ("{not json", "its recipe is unreadable"),
        (None, "no recipe was recorded"),  # as an earlier version cached it
    ):
        caplog.clear()
        recipe.write_text(text) if text is not None else recipe.unlink()
        assert (
            teacher_to_train(compose_config([*overrides, *short, "data.image_size=8"], output_dir=run))
            is None
        )
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert reason in warning and "is used as is" in warning, text


# -- 6. every term logged one way ---------------------------------------------------------------------------


@pytest.mark.slow
def test_terms_are_logged_raw_and_weighted_and_the_weighted_ones_sum_to_the_loss(tmp_path):
    """pckd_warmup in epoch 1: category contrast counts 0.05 · 1/5 of its value; the shares sum to train/loss."""
    summary, values = two_step_run(tmp_path, "pckd_warmup")
    row = next(r for r in metric_rows(tmp_path) if r.get("train/loss"))
    shares = {t: float(row[f"train/weighted/{t}"]) for t in summary["terms"]}
    assert sum(shares.values()) == pytest.approx(float(row["train/loss"]), rel=1e-5)
    assert shares["category_contrast"] == pytest.approx(0.05 / 5 * values["category_contrast"][0], rel=1e-6)
    assert shares["feature_align"] == pytest.approx(20.0 / 5 * values["feature_align"][0], rel=1e-6)
    assert shares["kd"] == pytest.approx(values["kd"][0], rel=1e-6)  # weight 1, no warm-up


# -- 10. a typo inside the demo's cache ---------------------------------------------------------------------


def test_a_typo_inside_the_teacher_cache_is_an_error_not_a_new_teacher(tmp_path):
    cache = tmp_path / "run" / "cache" / "teachers"
    typo = cache / "digits_resnet20_seed0.pht"
    cfg = compose_config([f"model.teacher.checkpoint={typo}"], output_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"digits_resnet20_seed0\.pht.*does not exist.*cache file"):
        fit(cfg)
    assert not typo.exists() and not (tmp_path / "run" / "teacher").exists()


# -- which code made a number ------------------------------------------------------------------------------


def test_the_code_version_names_the_commit_and_tracked_changes_and_none_outside_git(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    assert code_version(package) == {"version": pckd_lightning.__version__, "commit": None, "dirty": None}
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    (package / "__init__.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("outputs/\n")
    for args in (["init", "-q"], ["add", "pkg/__init__.py", ".gitignore"], ["commit", "-q", "-m", "a"]):
        subprocess.run([*git, *args], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert len(head) == 40
    (tmp_path / "notes.txt").write_text("untracked\n")  # outside the package and conf/: not code that ran
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "x.py").write_text("ignored\n")
    assert code_version(package) == {"version": pckd_lightning.__version__, "commit": head, "dirty": False}
    for added in (package / "new_term.py", tmp_path / "conf" / "distill" / "mine.yaml"):
        added.parent.mkdir(parents=True, exist_ok=True)
        added.write_text("untracked\n")  # may be used by _target_ or a config group: the commit is not all
        assert code_version(package)["dirty"] is True, added
        added.unlink()
    (package / "__init__.py").write_text("x = 2\n")
    assert code_version(package)["dirty"] is True
    # a package installed inside another repository (a venv in a checkout) is not that repository's code
    installed = tmp_path / ".venv" / "pckd_lightning"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert code_version(installed)["commit"] is None

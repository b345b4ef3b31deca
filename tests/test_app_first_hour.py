"""A new user's first hour (issue 23): a typo or a bad folder gets one line naming the problem and the fix,
exit 2, with nothing printed before it and no run folder left behind; a file that is not a checkpoint is
called so; ``pckd-train --help`` shows whole phrases."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from helpers import pckd_train
from pckd_lightning.distillation import load_teacher
from pckd_lightning.resolvers import CATALOG_WIDTH, catalog
from pckd_lightning.run_folder import remove_if_unused


def refused(args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """stdout and stderr of a ``pckd-train`` start that must be refused with exit code 2."""
    run = pckd_train(args, env=env)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2, err[-3000:]
    return out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pckd-train: error: "), err
    return lines[0]


def files_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- a misspelt option, an unwritable folder, clashing flags: one line, exit 2 ----------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("distill=pckdd", r"distill=pckdd is not an option of distill: did you mean pckd\b"),
        ("model=nope", r"model=nope is not an option of model: the options are .*digits_resnet20_resnet8"),
        ("distil=pckd", r"distil is not a key of the config .*did you mean distill\?"),
        ("data.root=x", r"the chosen data has no root; .*data=<option>"),
    ],
)
def test_a_misspelt_option_or_key_is_one_line_with_the_choices(override, expected, tmp_path):
    out, err = refused([override, f"paths.log_dir={tmp_path}"])
    assert re.search(expected, one_line(err)) and not out
    assert not files_below(tmp_path)


def test_a_sweep_setting_a_key_the_default_data_set_lacks_says_to_use_paths_data_dir(tmp_path):
    _, err = refused(
        ["-m", "experiment=glob(cifar100_teacher_*)", "data.root=x", f"paths.log_dir={tmp_path}"]
    )
    assert "data.root is not a key of the sweep's base config" in one_line(err) and "paths.data_dir=" in err


def test_a_misspelt_value_of_a_sweep_is_refused_before_any_job(tmp_path):
    _, err = refused(["-m", "distill=kd,pckdd", f"paths.log_dir={tmp_path}"])
    assert "distill=pckdd is not an option of distill" in one_line(err)
    assert not list(tmp_path.rglob("csv"))  # the kd job did not run


def test_multirun_with_cfg_is_one_line_with_the_fix():
    _, err = refused(["-m", "distill=kd,pckd", "--cfg", "job"])
    assert "cannot be combined with -m" in one_line(err) and "drop -m" in err


@pytest.mark.parametrize("kind", ["a file in the way", "read-only"])
def test_an_unwritable_output_folder_is_one_line_naming_it(kind, tmp_path):
    if kind == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        log_dir = tmp_path / "locked"
        log_dir.mkdir(mode=0o555)
    else:
        (tmp_path / "a_file").write_text("not a folder")
        log_dir = tmp_path / "a_file" / "out"
    _, err = refused([f"paths.log_dir={log_dir}"])
    assert f"cannot write the run folder {log_dir}" in one_line(err) and "paths.log_dir=<folder>" in err


def test_hydra_full_error_still_shows_the_traceback():
    run = pckd_train(["distill=pckdd"], env={"HYDRA_FULL_ERROR": "1"})
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0 and "Traceback" in err and "Could not find 'distill/pckdd'" in err


# -- the error is the last thing printed, and a refused run leaves no folder --------------------------------


def test_a_bad_value_is_reported_before_the_config_is_printed_and_leaves_no_folder(tmp_path):
    out, err = refused(["module.lr_scaling=linaer", f"paths.log_dir={tmp_path}"])
    assert not out  # no config tree above the error
    assert "lr_scaling='linaer' is not a valid choice" in err and "Traceback" not in err
    assert not files_below(tmp_path)


def test_a_refused_resume_leaves_its_folder_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (run_dir / "summary.json").write_text("{}")
    _, err = refused([f"ckpt_path={run_dir}/checkpoints/last.ckpt"])
    assert "is not a PyTorch checkpoint" in err
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"not a checkpoint"
    assert (run_dir / "summary.json").read_text() == "{}"
    assert "CheckpointError" in (run_dir / "train.log").read_text()  # recorded in the folder it kept


def hydra_litter(folder: Path) -> Path:
    """What Hydra writes into a run folder before the run starts."""
    (folder / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).write_text("{}")
    (folder / "train.log").write_text("[...] error\n")
    return folder


def test_only_a_folder_holding_nothing_but_hydras_files_is_removed(tmp_path):
    assert remove_if_unused(hydra_litter(tmp_path / "typo"), ".hydra", {"train.log"})
    assert not (tmp_path / "typo").exists()
    for kept in (
        "config.yaml",
        "summary.json",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
        ".hydra/mine.txt",
    ):
        folder = hydra_litter(tmp_path / kept.replace("/", "_"))
        (folder / kept).parent.mkdir(exist_ok=True)
        (folder / kept).write_text("kept")
        before = files_below(folder)
        assert not remove_if_unused(folder, ".hydra", {"train.log"})
        assert files_below(folder) == before and (folder / kept).read_text() == "kept"


# -- a file that is not a checkpoint; --help --------------------------------------------------------------


def test_a_teacher_file_of_random_bytes_is_called_not_a_checkpoint(tmp_path):
    path = tmp_path / "teacher.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(Exception, match="not a PyTorch checkpoint") as refusal:
        load_teacher("resnet8", str(path), num_classes=10)
    message = str(refusal.value)
    assert str(path) in message and "{'model': state_dict}" in message and "weights_only" not in message


@pytest.mark.parametrize("group", ["distill", "model", "experiment", "data", "trainer", "logger"])
def test_help_describes_each_option_in_whole_phrases(group):
    for line in catalog(group).splitlines():
        description = line[37:]
        assert len(description) <= CATALOG_WIDTH + 4, line
        assert description.endswith((".", " ...")), line
        assert description.count("(") == description.count(")") and description.count("`") % 2 == 0, line

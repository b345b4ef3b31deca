"""benchmarks/packed_runs.py and the device script's packed/row stages, dry-run on CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType

import pytest

from helpers import REPO, load_benchmark, write_fake_cifar

BENCHMARKS = REPO / "benchmarks"
#: a few images, one step per epoch: the harness, not the numbers
TINY = (
    "+data.check_sizes=false data.train_per_class=2 data.val_per_class=1 "
    "+trainer.limit_train_batches=1 +trainer.limit_val_batches=1"
)


@pytest.fixture(scope="module")
def packed_runs() -> ModuleType:
    return load_benchmark("packed_runs")


def test_a_shorter_row_scales_the_published_schedule(packed_runs):
    profile = packed_runs.scaled_profile("paper-row", 24, ["trainer.precision=bf16-mixed"])
    assert (profile.teacher_epochs, profile.student_epochs) == (24, 24)
    assert profile.methods == ("kd", "dkd", "pckd_wo_kd", "pckd")
    assert "lr_milestones=[15,18,21]" in profile.overrides
    assert profile.overrides[-1] == "trainer.precision=bf16-mixed"
    assert profile.method_overrides["dkd"][-1] == "distill.terms.dkd.warmup_epochs=2"


def test_the_published_row_keeps_240_epochs(packed_runs):
    profile = packed_runs.scaled_profile("paper-row", None, [])
    assert (profile.teacher_epochs, profile.student_epochs) == (240, 240)
    assert not any(o.startswith("lr_milestones") for o in profile.overrides)


def test_memory_is_read_for_every_process_of_a_tree(packed_runs):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            tree = packed_runs.descendants(os.getpid())
            assert child.pid in tree and os.getpid() in tree
            memory = packed_runs.process_memory_mib(tree, cuda=False)
            assert memory[child.pid] > 1 and memory[os.getpid()] > memory[child.pid]
        finally:
            child.kill()


@pytest.mark.slow
def test_the_device_script_dry_run_packs_runs_and_trains_the_row_from_chunks(tmp_path):
    """gpu_suite.sh's packed and row stages with DEVICE=cpu: chunks unpacked, 2 runs side by side, the row."""
    write_fake_cifar(tmp_path / "src", n=200)
    pack = [sys.executable, str(BENCHMARKS / "device_data.py"), "pack", "--no-check-sizes"]
    subprocess.run([*pack, "--root", str(tmp_path / "src"), "--out", str(tmp_path / "dd")], check=True)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "SKIP_INSTALL": "1",
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path / "out"),
        "DATA_ROOT": str(tmp_path / "dd"),
        "STAGES": "packed row",
        "PACKED_RUNS": "2",
        "PACKED_EPOCHS": "1",
        "PACKED_PAIR": "resnet8:resnet8",
        "PACKED_OVERRIDES": TINY,
        "ROW_EPOCHS": "1",
        "ROW_JOBS": "2",
        "ROW_OUT": str(tmp_path / "row"),
        "ROW_OVERRIDES": TINY,
    }
    run = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_suite.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "dd" / "cifar-100-python" / "train").is_file()  # unpacked from the chunks
    rows = [json.loads(line) for line in (tmp_path / "out" / "bench.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["bench"] in ("failed", "skipped")], rows
    (packed,) = [r for r in rows if r["bench"] == "packed_runs"]
    assert packed["runs"] == packed["finished"] == 2 and len(packed["peak_mib_per_run"]) == 2
    back = tmp_path / "out" / "paper_row"
    assert len(list(back.rglob("summary.json"))) == 5  # the teacher and the four students
    report = (back / "report" / "report.md").read_text()
    for method in ("kd", "dkd", "pckd_wo_kd", "pckd"):
        assert f"| {method} |" in report


def test_the_summary_compares_with_one_run_alone_only_where_it_was_measured(packed_runs):
    """--runs 2 4 has no run alone: its rows give their own rates, not ratios to the 2-run row; a run whose
    memory could not be read says so instead of "peak 0 MiB"."""
    row = {"runs": 2, "epochs_per_s": 1.0, "peak_mib_per_run": []}
    rows = [
        {"runs": 1, "epochs_per_s": 0.8, "peak_mib_per_run": [300]},
        {**row, "peak_mib_per_run": [310, 305]},
    ]
    assert packed_runs.describe(rows)[1] == (
        "2 runs: 1.000 epochs/s in all (each at 0.62x the speed of one alone), peak 310 MiB per run"
    )
    assert packed_runs.describe([row]) == [
        "2 runs: 1.000 epochs/s in all (each 0.500 epochs/s), peak per run not measured"
    ]

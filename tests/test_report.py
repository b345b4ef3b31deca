"""pckd-report: finding run folders, mean ± sample std (ddof=1) over seeds, Δ vs KD, incomplete runs, outputs."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, compose_config
from pckd_lightning.report import build_report, collect_runs
from pckd_lightning.report.cli import main as report_main
from pckd_lightning.report.collect import row_key
from pckd_lightning.run import fit
from report_runs import (
    BEST,
    MAX_EPOCHS,
    P1,
    P2,
    PNG_MAGIC,
    edit_config,
    parse_table,
    write_run,
    write_runs,
)


@pytest.fixture
def runs(tmp_path) -> Path:
    return write_runs(tmp_path / "outputs")


def cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f} ± " + ("n/a" if std is None else f"{std:.2f}")


def test_table_numbers_against_hand_computed_mean_and_sample_std(runs, tmp_path):
    report, markdown = build_report(runs, tmp_path / "report")
    best = parse_table(markdown, "## Best-epoch top-1 (%)")
    last = parse_table(markdown, "## Last-epoch top-1 (%)")
    # pairs are sorted (teacher, student): P2 (resnet32x4) comes first
    assert best[""] == ["resnet32x4 → resnet8x4", "resnet56 → resnet20"]
    assert list(best)[1:] == ["teacher", "student (scratch)", "kd", "crd", "pckd"]
    # hand-computed, sample std (ddof=1): P1 kd 70.6/70.9/71.2 -> 70.90 ± 0.30; P2 kd -> 73.40 ± 0.20
    assert best["kd"] == ["73.40 ± 0.20", "70.90 ± 0.30"]
    # P1 pckd 72.0/71.5/72.4: mean 71.9667, var (0.0011+0.2178+0.1878)/2 = 0.2033 -> std 0.4509
    # P2 pckd 76.1/76.4/75.9: mean 76.1333, var (0.0011+0.0711+0.0544)/2 = 0.0633 -> std 0.2517
    assert best["pckd"] == ["76.13 ± 0.25", "71.97 ± 0.45"]
    assert last["pckd"] == ["75.83 ± 0.25", "71.67 ± 0.45"]
    assert best["student (scratch)"] == ["72.33 ± 0.25", "69.53 ± 0.55"]
    assert best["crd"] == ["—", "71.70 ± n/a (n=1)"]
    # the teacher: P1 one checkpoint (once, no std); P2 79.0/79.4/79.6 -> 79.33 ± 0.31
    assert best["teacher"] == ["79.33 ± 0.31", "72.34 ± n/a"]
    for (pair, method), values in BEST.items():
        row = "student (scratch)" if method == "ce" else method
        column = 0 if pair == P2 else 1
        assert best[row][column] == cell(statistics.mean(values), statistics.stdev(values))
        lasts = [v - 0.3 for v in values]
        assert last[row][column] == cell(statistics.mean(lasts), statistics.stdev(lasts))
    assert "sample standard deviation (ddof=1)" in markdown

    delta = parse_table(markdown, "### Δ vs KD, best-epoch top-1 (%)")
    # P1 71.9667 - 70.90 = +1.07; P2 76.1333 - 73.40 = +2.73; average +1.90
    assert delta["pckd"] == ["+2.73", "+1.07", "+1.90"]
    # one seed against KD's three; its average covers one pair, so it says so
    assert delta["crd"] == ["—", "+0.80 †", "+0.80 (1 of 2 pairs)"]
    assert "kd" not in delta and "student (scratch)" not in delta
    expected = statistics.mean(BEST[(P1, "pckd")]) - statistics.mean(BEST[(P1, "kd")])
    assert report.delta[("pckd", report.pairs[1], "best")] == pytest.approx(expected)


def test_incomplete_runs_are_listed_and_never_averaged(runs, tmp_path):
    records = {str(r.run_dir.relative_to(runs)): r for r in collect_runs(runs)}
    assert len(records) == 18 + 1 + 3 and not any(".hydra" in name for name in records)
    assert records["killed"].status == "incomplete" and "no summary.json" in records["killed"].reason
    assert records["nan"].status == "incomplete" and "best_top1 is not finite" in records["nan"].reason
    assert records["short"].status == "incomplete" and "4 of 10 epochs" in records["short"].reason

    report, markdown = build_report(runs, tmp_path / "report")
    incomplete = parse_table(markdown, "## Incomplete runs (not averaged in)")
    assert incomplete[""] == ["method", "pair", "seed", "epochs", "reason"]
    listed = {Path(run).name: cells for run, cells in incomplete.items() if run}
    assert set(listed) == {"killed", "nan", "short"}
    assert listed["short"][3] == "4/10"
    # the kd cells hold exactly the three complete seeds (the NaN run and the 99 % short run are out)
    p2, p1 = report.pairs
    assert (p1.teacher, p1.student, p1.dataset) == (*P1, "cifar100")
    assert report.cells[("kd", p1, "best")].values == tuple(BEST[(P1, "kd")])
    assert report.cells[("kd", p2, "best")].seeds == (0, 1, 2)


def test_csv_outputs(runs, tmp_path):
    out = tmp_path / "report"
    build_report(runs, out)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 22
    statuses = {Path(r["run_dir"]).name: r["status"] for r in rows}
    assert statuses["killed"] == statuses["nan"] == statuses["short"] == "incomplete"
    assert sum(r["status"] == "complete" for r in rows) == 19
    nan = next(r for r in rows if r["run_dir"].endswith("nan"))
    assert nan["best_top1"] == "nan" and "not finite" in nan["reason"]
    seed1 = next(r for r in rows if r["run_dir"].endswith("resnet20_pckd/seed1"))
    assert (seed1["method"], seed1["teacher"], seed1["student"], seed1["seed"]) == ("pckd", *P1, "1")
    assert float(seed1["best_top1"]) == 71.5 and float(seed1["last_top1"]) == pytest.approx(71.2)
    assert seed1["dataset"] == "cifar100" and seed1["epochs"] == "10"

    agg = list(csv.DictReader((out / "aggregate.csv").open()))
    key = {(r["student"], r["row"], r["metric"]): r for r in agg}
    kd = key[("resnet20", "kd", "best")]
    assert int(kd["n"]) == 3 and float(kd["mean"]) == pytest.approx(70.9)
    assert float(kd["std"]) == pytest.approx(statistics.stdev([70.6, 70.9, 71.2])) and kd["delta_vs_kd"] == ""
    pckd = key[("resnet8x4", "pckd", "last")]
    assert float(pckd["mean"]) == pytest.approx(statistics.mean([75.8, 76.1, 75.6]))
    assert float(pckd["delta_vs_kd"]) == pytest.approx(statistics.mean([75.8, 76.1, 75.6]) - 73.1)
    assert key[("resnet20", "crd", "best")]["std"] == ""  # a single seed has no std
    assert float(key[("resnet8x4", "teacher", "teacher")]["std"]) == pytest.approx(
        statistics.stdev([79.0, 79.4, 79.6])
    )


def test_png_and_cli(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert report_main([str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Best-epoch top-1 (%)" in printed and "| pckd | 76.13 ± 0.25 | 71.97 ± 0.45 |" in printed
    assert (out / "report.md").read_text().strip() in printed
    png = (out / "curves.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    report = build_report(runs, tmp_path / "again", plot=False)[0]
    # curve: mean over seeds of the last-epoch values, per epoch counted from 1
    curve = report.curves[("pckd", report.pairs[1])]
    assert list(curve) == list(range(1, MAX_EPOCHS + 1))
    assert curve[MAX_EPOCHS] == pytest.approx(statistics.mean(v - 0.3 for v in BEST[(P1, "pckd")]))
    assert not (tmp_path / "again" / "curves.png").exists()


def test_ablations_and_reruns_are_not_mixed(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root / f"full{seed}", P1, "pckd", seed, 72.0 + seed, 71.0)
    for seed in range(2):
        ablation = write_run(root / f"wo_fa{seed}", P1, "pckd", seed, 60.0 + seed, 59.0)
        cfg = yaml.safe_load((ablation / "config.yaml").read_text())
        del cfg["distill"]["terms"]["feature_align"]
        (ablation / "config.yaml").write_text(yaml.safe_dump(cfg))
    rerun = write_run(root / "full0_rerun", P1, "pckd", 0, 80.0, 79.0)
    os.utime(rerun / "summary.json", (2e9, 2e9))  # newer than the first seed-0 run
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    assert report.rows == ["pckd", "pckd (without feature_align)"]
    pair = report.pairs[0]
    assert sorted(report.cells[("pckd", pair, "best")].values) == [73.0, 74.0, 80.0]  # newest seed 0 only
    assert report.cells[("pckd (without feature_align)", pair, "best")].values == (60.0, 61.0)
    assert "## Superseded reruns (not averaged in)" in markdown
    # an older run copied back later (a fresh file time) does not supersede the rerun: finished_at decides
    for run, finished in (
        (root / "full0", "2026-01-01T00:00:00+00:00"),
        (rerun, "2026-02-01T00:00:00+00:00"),
    ):
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "finished_at": finished}))
    os.utime(root / "full0" / "summary.json", (3e9, 3e9))
    report, _ = build_report(root, tmp_path / "again", plot=False)
    assert sorted(report.cells[("pckd", pair, "best")].values) == [73.0, 74.0, 80.0]
    # a summary from before finished_at existed is older than one with it, whatever its file time
    first = json.loads((root / "full0" / "summary.json").read_text())
    (root / "full0" / "summary.json").write_text(json.dumps({**first, "finished_at": None}))
    os.utime(root / "full0" / "summary.json", (3e9, 3e9))
    report, _ = build_report(root, tmp_path / "older", plot=False)
    assert sorted(report.cells[("pckd", pair, "best")].values) == [73.0, 74.0, 80.0]
    # runs without a seed (seed: null) drew their own: each is a sample, none a rerun of another
    for n in range(2):
        unseeded = write_run(root / f"crd{n}", P1, "crd", 0, 70.0 + n, 69.0)
        edit_config(unseeded, lambda cfg: cfg.update(seed=None))
        summary = json.loads((unseeded / "summary.json").read_text())
        (unseeded / "summary.json").write_text(json.dumps({**summary, "seed": None}))
    report, _ = build_report(root, tmp_path / "unseeded", plot=False)
    assert sorted(report.cells[("crd", pair, "best")].values) == [70.0, 71.0]


@pytest.mark.slow
def test_reads_what_fit_really_writes(tmp_path):
    quiet = [
        "logger=csv",
        "callbacks.progress_bar=null",
        "data.num_workers=0",
        "model=digits_scratch_resnet8",
    ]
    complete = fit(
        compose_config(
            ["distill=ce", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", *quiet],
            output_dir=tmp_path / "runs" / "scratch",
        )
    )
    fit(
        compose_config(
            ["distill=ce", "+trainer.fast_dev_run=1", *quiet], output_dir=tmp_path / "runs" / "smoke"
        )
    )
    records = {r.run_dir.name: r for r in collect_runs(tmp_path / "runs")}
    assert set(records) == {"scratch", "smoke"}
    run = records["scratch"]
    assert run.status == "complete", run.reason
    # two batches an epoch: a debug run, in a column of its own
    digits = "digits [partial epochs: limit_train_batches=2]"
    assert (run.method, run.student, run.dataset, run.seed, run.epochs) == ("ce", "resnet8", digits, 0, 1)
    assert run.best_top1 == pytest.approx(complete["best_top1"])
    assert list(run.curve) == [0] and run.curve[0] == pytest.approx(complete["last_top1"], abs=1e-4)
    assert records["smoke"].status == "incomplete" and "fast_dev_run" in records["smoke"].reason
    # which code and machine made the numbers: this checkout's commit, this process's torch, the CPU
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert complete["code"] == {"version": "0.1.0", "commit": head.stdout.strip(), "dirty": bool(changed)}
    assert run.code_commit == head.stdout.strip() + ("+dirty" if changed else "")
    assert complete["machine"]["device"] == "cpu" and complete["machine"]["devices"] == 1
    assert complete["machine"]["torch"] == torch.__version__

    script = Path(sys.executable).with_name("pckd-report")
    result = subprocess.run(
        [str(script), str(tmp_path / "runs"), "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "resnet8 | digits" in result.stdout and "Incomplete runs" in result.stdout
    assert (tmp_path / "report" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    with open(tmp_path / "report" / "runs.csv") as f:
        assert {r["run_dir"].rsplit("/", 1)[-1]: r["code_commit"] for r in csv.DictReader(f)}["scratch"] == (
            run.code_commit
        )


def test_paired_delta_vs_kd_is_taken_seed_by_seed(runs, tmp_path):
    report, markdown = build_report(runs, tmp_path / "report", plot=False)
    paired = parse_table(markdown, "### Paired Δ vs KD over the same seeds, best-epoch top-1 (%)")
    # P1 pckd - kd per seed: 72.0-70.6, 71.5-70.9, 72.4-71.2 = 1.4, 0.6, 1.2: mean 1.0667,
    # squared deviations 0.1111 + 0.2178 + 0.0178 = 0.3467, / 2 -> std 0.4163
    assert paired["pckd"][1] == "+1.07 ± 0.42"
    # scratch P1: -1.6, -1.4, -1.1 -> -1.3667 ± 0.2517; crd has seed 0 only: 71.7 - 70.6
    assert paired["student (scratch)"][1] == "-1.37 ± 0.25"
    assert paired["crd"] == ["—", "+1.10 ± n/a (n=1)"]
    assert "kd" not in paired
    stat = report.paired[("pckd", report.pairs[1], "best")]
    assert stat.seeds == (0, 1, 2)
    assert stat.values == pytest.approx(
        [a - b for a, b in zip(BEST[(P1, "pckd")], BEST[(P1, "kd")], strict=True)]
    )
    agg = {
        (r["student"], r["row"], r["metric"]): r
        for r in csv.DictReader((tmp_path / "report" / "aggregate.csv").open())
    }
    row = agg[("resnet20", "pckd", "best")]
    assert float(row["paired_delta_vs_kd"]) == pytest.approx(statistics.mean([1.4, 0.6, 1.2]))
    assert float(row["paired_delta_std"]) == pytest.approx(statistics.stdev([1.4, 0.6, 1.2]))
    assert row["paired_seeds"] == "0;1;2" and agg[("resnet20", "kd", "best")]["paired_delta_vs_kd"] == ""


def test_paired_delta_uses_only_the_seeds_both_rows_have(tmp_path):
    root = tmp_path / "runs"
    for seed, best in enumerate([70.0, 71.0, 75.0]):
        write_run(root / f"kd{seed}", P1, "kd", seed, best, best)
    for seed, best in ((1, 72.0), (2, 76.5), (3, 99.0)):  # seed 3 has no KD partner
        write_run(root / f"pckd{seed}", P1, "pckd", seed, best, best)
    report = build_report(root, tmp_path / "out", plot=False)[0]
    stat = report.paired[("pckd", report.pairs[0], "best")]
    assert stat.seeds == (1, 2) and stat.values == pytest.approx([1.0, 1.5])
    # the unpaired Δ mixes the seeds: mean(72, 76.5, 99) - mean(70, 71, 75)
    assert report.delta[("pckd", report.pairs[0], "best")] == pytest.approx(82.5 - 72.0)


def test_a_subsampled_data_set_is_named_as_such_and_never_mixed_with_the_full_one():
    from pckd_lightning.report.collect import dataset_name

    subset = {
        "_target_": "x.CIFAR100DataModule",
        "class_subset": 20,
        "train_per_class": 150,
        "val_per_class": 50,
    }
    assert (
        dataset_name({"data": subset}) == "cifar100 (subsampled: 20 classes, 150 train/class, 50 val/class)"
    )
    assert dataset_name({"data": {"_target_": "x.CIFAR100DataModule", "class_subset": None}}) == "cifar100"


def test_no_delta_between_rows_of_different_schedules(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root / f"kd{seed}", P1, "kd", seed, 70.0 + seed, 69.0)
        short = write_run(root / f"pckd{seed}", P1, "pckd", seed, 60.0 + seed, 59.0)
        cfg = yaml.safe_load((short / "config.yaml").read_text())
        cfg["trainer"]["max_epochs"] = 2  # a shorter schedule than KD's; the run finished it
        (short / "config.yaml").write_text(yaml.safe_dump(cfg))
        summary = json.loads((short / "summary.json").read_text())
        (short / "summary.json").write_text(json.dumps({**summary, "epochs": 2}))
    report = build_report(root, tmp_path / "out", plot=False)[0]
    pair = report.pairs[0]
    row = "pckd (trainer.max_epochs=2)"  # the plain rows are at the longer of two equally common lengths
    assert report.rows == ["kd", row] and report.cells[(row, pair, "best")].values == (60.0, 61.0)
    assert (row, pair, "best") not in report.delta and (row, pair, "best") not in report.paired


def test_gradient_shares_are_averaged_over_seeds_per_step_and_drawn(runs, tmp_path):
    """GradientShare logs grad/* rows with a step and no epoch; the report means them over the seeds."""
    values = {0: (16.0, 0.5), 1: (18.0, 0.7)}  # seed: (FA's norm at step 49, its cosine with CE)
    for seed, (norm, cos) in values.items():
        path = runs / "resnet20_pckd" / f"seed{seed}" / "csv" / "metrics.csv"
        with path.open() as f:
            rows = list(csv.reader(f))
        header = [*rows[0], "grad/ce/norm", "grad/feature_align/norm", "grad/feature_align/cos_ce"]
        body = [[*row, "", "", ""] for row in rows[1:]]
        blank = [""] * len(rows[0])
        blank[header.index("step")] = "49"
        body.append([*blank, "0.9", str(norm), str(cos)])
        blank = list(blank)
        blank[header.index("step")] = "99"
        body.append([*blank, "1.2", "not a number", "0.1"])  # an unreadable cell is left out
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *body])
    report = build_report(runs, tmp_path / "out")[0]
    (label, pair), series = next(iter(report.gradients.items()))
    assert label == "pckd" and pair.student == "resnet20" and len(report.gradients) == 1
    assert series["grad/feature_align/norm"] == {49: pytest.approx(17.0)}
    assert series["grad/feature_align/cos_ce"] == {49: pytest.approx(0.6), 99: pytest.approx(0.1)}
    assert series["grad/ce/norm"] == {49: pytest.approx(0.9), 99: pytest.approx(1.2)}
    png = (tmp_path / "out" / "gradients.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    build_report(runs / "resnet8x4_pckd", tmp_path / "none")  # no grad/* logged: no gradients.png
    assert not (tmp_path / "none" / "gradients.png").exists()


def test_a_sweep_sharing_one_augmentation_stream_is_its_own_row_not_reruns(tmp_path):
    """data.aug_seed=0 for every seed (a teacher-cache sweep) against streams that follow the seed: another
    experiment, and seed 1 of one is no rerun of seed 1 of the other, even where the shared value equals the
    seed (seed 0). A summary without aug_stream (older) counts a value other than the seed as shared."""
    root = tmp_path / "runs"
    for seed in range(4):  # more runs: the plain "kd" row is the most common setting
        own = write_run(root / f"own{seed}", P1, "kd", seed, 70.0 + seed, 69.0, aug_stream="seed")
        edit_config(own, lambda cfg, seed=seed: cfg["data"].update(aug_seed=seed))
    for seed in range(2):
        shared = write_run(root / f"shared{seed}", P1, "kd", seed, 60.0 + seed, 59.0, aug_stream="shared")
        edit_config(shared, lambda cfg: cfg["data"].update(aug_seed=0))
        os.utime(shared / "summary.json", (2e9, 2e9))  # newer: it would supersede a same-setting run
    older = write_run(root / "shared2", P1, "kd", 2, 50.0, 49.0)  # no aug_stream in its summary
    edit_config(older, lambda cfg: cfg["data"].update(aug_seed=0))
    report = build_report(root, tmp_path / "out", plot=False)[0]
    pair = report.pairs[0]
    assert all(r.complete for r in report.records)  # none superseded
    assert report.cells[("kd", pair, "best")].values == (70.0, 71.0, 72.0, 73.0)
    assert report.cells[("kd (data.aug_seed=0)", pair, "best")].values == (60.0, 61.0, 50.0)


def test_runs_of_another_lr_schedule_are_their_own_row_not_reruns(tmp_path):
    """Only the seed differs between reruns: a scheduler (or data, precision, ...) change is another row."""
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root / f"step{seed}", P1, "kd", seed, 70.0 + seed, 69.0)
    for seed in range(2):  # fewer runs: the plain "kd" row is the most common setting
        cosine = write_run(root / f"cosine{seed}", P1, "kd", seed, 60.0 + seed, 59.0)
        edit_config(cosine, lambda cfg: cfg.update(scheduler={"_target_": "x.Cosine", "T_max": 10}))
        os.utime(cosine / "summary.json", (2e9, 2e9))  # newer: it would supersede a same-setting run
    report = build_report(root, tmp_path / "out", plot=False)[0]
    pair = report.pairs[0]
    assert all(r.complete for r in report.records)  # none superseded
    assert report.cells[("kd", pair, "best")].values == (70.0, 71.0, 72.0)
    (variant,) = [label for label in report.rows if label != "kd"]
    assert "scheduler._target_=x.Cosine" in variant
    assert report.cells[(variant, pair, "best")].values == (60.0, 61.0)


def test_the_scratch_row_averages_one_setting_and_lists_the_others_apart(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root / f"kd{seed}", P1, "kd", seed, 70.0, 69.0)
        write_run(root / f"ce{seed}", P1, "ce", seed, 65.0 + seed, 64.0)
    for seed in range(2):
        long = write_run(root / f"ce_long{seed}", P1, "ce", seed, 50.0 + seed, 50.0, epochs=30)
        edit_config(long, lambda cfg: cfg["trainer"].update(max_epochs=30))
    report = build_report(root, tmp_path / "out", plot=False)[0]
    pair = report.pairs[0]
    assert report.cells[("student (scratch)", pair, "best")].values == (65.0, 66.0, 67.0)
    assert report.other_scratch[(pair.dataset, "resnet20 (trainer.max_epochs=30)", "best")].values == (
        50.0,
        51.0,
    )


@pytest.mark.parametrize(
    ("trainer", "tag"),
    [
        (
            {"limit_val_batches": 0.05, "limit_train_batches": 1.0},
            " [partial epochs: limit_val_batches=0.05]",
        ),
        ({"limit_train_batches": 1}, " [partial epochs: limit_train_batches=1]"),  # an int: one batch
        ({"overfit_batches": 2}, " [partial epochs: overfit_batches=2]"),
        ({"limit_train_batches": 1.0, "overfit_batches": 0.0, "limit_test_batches": None}, ""),
    ],
)
def test_a_run_on_part_of_each_epoch_is_a_data_set_of_its_own(trainer, tag):
    """debug=limit and overfit_batches runs finish their epochs, but never count as, or with, results."""
    from pckd_lightning.report.collect import dataset_name

    assert (
        dataset_name({"data": {"_target_": "x.CIFAR100DataModule"}, "trainer": trainer}) == f"cifar100{tag}"
    )


SHA_A, SHA_B = "a" * 64, "b" * 64


def test_a_run_whose_last_validation_was_not_its_final_epoch_is_incomplete(tmp_path):
    """check_val_every_n_epoch=3 over 10 epochs validates last at epoch 9: its last_top1 is not the final one."""
    root = tmp_path / "runs"
    write_run(root / "final", P1, "kd", 0, 70.0, 69.0, last_top1_epoch=MAX_EPOCHS)
    write_run(root / "early", P1, "kd", 1, 99.0, 99.0, last_top1_epoch=9)
    write_run(root / "older", P1, "kd", 2, 71.0, 70.0)  # written before the field existed: not checked
    records = {r.run_dir.name: r for r in collect_runs(root)}
    assert records["final"].complete and records["older"].complete
    assert records["early"].status == "incomplete"
    assert records["early"].reason == "last validation at epoch 9 of 10: last_top1 is not the final epoch's"
    report = build_report(root, tmp_path / "out", plot=False)[0]
    assert report.cells[("kd", report.pairs[0], "last")].values == (69.0, 70.0)


def test_runs_distilled_from_different_teacher_files_never_share_a_row_or_supersede(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        for method, best in (("kd", 70.0 + seed), ("pckd", 71.0 + 2 * seed)):
            write_run(
                root / f"{method}_a{seed}",
                P1,
                method,
                seed,
                best,
                69.0,
                teacher_top1=72.0,
                teacher_sha256=SHA_A,
            )
    other = write_run(root / "kd_b0", P1, "kd", 0, 60.0, 59.0, teacher_top1=65.0, teacher_sha256=SHA_B)
    os.utime(other / "summary.json", (2e9, 2e9))  # newer: as a rerun of seed 0 it would supersede kd_a0
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    assert all(r.complete for r in report.records)
    a, b = report.pairs
    assert (a.teacher_sha256, b.teacher_sha256) == (SHA_A, SHA_B)
    assert report.cells[("kd", a, "best")].values == (70.0, 71.0)
    assert report.cells[("kd", b, "best")].values == (60.0,)
    assert report.teacher[a].values == (72.0,) and report.teacher[b].values == (65.0,)
    # pckd is compared with the KD of its own teacher file only: 71 - 70, 73 - 71
    assert report.paired[("pckd", a, "best")].values == (1.0, 2.0)
    assert not any(pair == b and row == "pckd" for row, pair, _ in [*report.cells, *report.paired])
    labels = ["resnet56 [aaaaaaaa] → resnet20", "resnet56 [bbbbbbbb] → resnet20"]
    assert [report.pair_label(p) for p in report.pairs] == labels
    assert parse_table(markdown, "## Best-epoch top-1 (%)")[""] == labels
    teachers = {t.sha256: t for t in report.teachers}
    assert (teachers[SHA_A].runs, teachers[SHA_A].top1, teachers[SHA_B].runs) == (4, 72.0, 1)


#: a value off the default of each setting a resume may change (resume.RECORDED), and of one it may not
OFF_DEFAULT = [
    ("trainer", "check_val_every_n_epoch", 2),
    ("trainer", "val_check_interval", 0.5),
    ("trainer", "val_check_interval", 1),  # an int counts batches: validated after every one
    ("module.teacher_options", "float32", True),
    ("module", "sync_batchnorm", True),
    ("trainer", "limit_train_batches", 0.5),
    ("trainer", "limit_train_batches", 1),  # one batch an epoch, not the whole of it
    ("trainer", "limit_val_batches", 3),
    ("trainer", "limit_test_batches", 0.25),
    ("trainer", "overfit_batches", 0.1),
]


def test_every_setting_a_resume_may_change_is_checked_off_its_default():
    from pckd_lightning.resume import RECORDED

    assert set(RECORDED) <= {f"{section}.{key}" for section, key, _ in OFF_DEFAULT}


@pytest.mark.parametrize(("section", "key", "value"), OFF_DEFAULT)
def test_settings_a_resume_may_change_still_make_a_row_of_their_own(section, key, value, tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root / f"plain{seed}", P1, "kd", seed, 70.0, 69.0)
    changed = write_run(root / "changed", P1, "kd", 0, 50.0, 49.0)

    def edit(cfg: dict) -> None:
        for part in section.split("."):
            cfg = cfg.setdefault(part, {})
        cfg[key] = value

    edit_config(changed, edit)
    os.utime(changed / "summary.json", (2e9, 2e9))  # newer: as a rerun of seed 0 it would supersede plain0
    records = {r.run_dir.name: r for r in collect_runs(root)}
    assert all(r.complete for r in records.values())
    assert records["changed"].settings[f"{section}.{key}"] == value
    assert "trainer.check_val_every_n_epoch" not in records["plain0"].settings  # at its default: left out
    assert row_key(records["changed"]) != row_key(records["plain0"]) == row_key(records["plain1"])
    report = build_report(root, tmp_path / "out", plot=False)[0]
    best = sorted(stat.values for (_, _, metric), stat in report.cells.items() if metric == "best")
    assert best == [(50.0,), (70.0, 70.0)]


def test_numbers_compare_by_value_and_booleans_stay_booleans(tmp_path):
    from pckd_lightning.report.collect import normalized, same

    root = tmp_path / "runs"
    for seed, temperature in ((0, 4), (1, 4.0), (2, 4)):
        run = write_run(root / f"kd{seed}", P1, "kd", seed, 70.0 + seed, 69.0)
        edit_config(run, lambda cfg, t=temperature: cfg["distill"]["terms"]["kd"].update(T=t))
    # the default, written out, is the default left out
    edit_config(root / "kd1", lambda cfg: cfg["trainer"].update(check_val_every_n_epoch=1.0))
    rerun = write_run(root / "kd0_rerun", P1, "kd", 0, 80.0, 79.0)
    edit_config(rerun, lambda cfg: cfg["distill"]["terms"]["kd"].update(T=4.0))
    os.utime(rerun / "summary.json", (2e9, 2e9))  # newer: 4.0 is 4, so it is a rerun of kd0
    report = build_report(root, tmp_path / "out", plot=False)[0]
    assert report.rows == ["kd"]
    assert sorted(report.cells[("kd", report.pairs[0], "best")].values) == [71.0, 72.0, 80.0]
    assert {r.run_dir.name: r.status for r in report.records}["kd0"] == "superseded"
    assert same(4, 4.0) and same([13, 15.0], [13.0, 15]) and not same(True, 1) and not same(0.5, 1)
    assert normalized(True) is True and type(normalized(4.0)) is int and normalized(0.5) == 0.5


def test_a_run_resumed_with_changes_is_labelled_and_never_supersedes_a_clean_run(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root / f"clean{seed}", P1, "kd", seed, 70.0 + seed, 69.0)
    resumed = {"checkpoint": "x/last.ckpt", "completed_epochs": 5, "changed": {}, "config_checked": True}
    changes = {"distill.terms.kd.weight": {"checkpoint": 0.9, "run": 0.5}}
    newer = [
        write_run(root / "changed", P1, "kd", 0, 60.0, 59.0, resumed_from={**resumed, "changed": changes}),
        write_run(
            root / "unchecked", P1, "kd", 1, 61.0, 60.0, resumed_from={**resumed, "config_checked": False}
        ),
    ]
    write_run(root / "clean_resume", P1, "kd", 2, 72.0, 71.0, resumed_from=resumed)  # resumed unchanged
    for run in newer:
        os.utime(run / "summary.json", (2e9, 2e9))  # newer than clean0/clean1 of the same seeds
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    assert all(r.complete for r in report.records)
    pair = report.pairs[0]
    assert report.cells[("kd", pair, "best")].values == (70.0, 71.0, 72.0)
    changed = "kd [resumed with changes: distill.terms.kd.weight=0.9→0.5]"
    unchecked = "kd [resumed unchecked: the checkpoint records no config]"
    assert report.cells[(changed, pair, "best")].values == (60.0,)
    assert report.cells[(unchecked, pair, "best")].values == (61.0,)
    assert f"| {changed} |" in markdown and f"| {unchecked} |" in markdown


def test_an_earlier_resumes_change_and_code_stay_on_the_run_after_a_later_clean_resume(tmp_path):
    """summary.json's segments: the last resume changed nothing, the one before it changed the KD weight
    under other code; the run is labelled with that change and lists both commits."""
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root / f"clean{seed}", P1, "kd", seed, 70.0 + seed, 69.0)
    change = {"distill.terms.kd.weight": {"checkpoint": 0.9, "run": 0.5}}
    first = {"checkpoint": "x/last.ckpt", "completed_epochs": 5, "changed": change, "config_checked": True}
    last = {**first, "completed_epochs": 8, "changed": {}}
    code_a, code_b = {"commit": "aaaa111", "dirty": False}, {"commit": "bbbb222", "dirty": True}
    segments = [{"code": code_a}, {"code": code_b, **first}, {"code": code_b, **last}]
    run = write_run(
        root / "twice", P1, "kd", 0, 60.0, 59.0, resumed_from=last, segments=segments, code=code_b
    )
    os.utime(run / "summary.json", (2e9, 2e9))  # newer than clean0
    report, _ = build_report(root, tmp_path / "out", plot=False)
    pair = report.pairs[0]
    assert report.cells[("kd", pair, "best")].values == (70.0, 71.0)  # clean0 not superseded
    assert report.cells[
        ("kd [resumed with changes: distill.terms.kd.weight=0.9→0.5]", pair, "best")
    ].values == (60.0,)
    assert {r.run_dir.name: r.code_commit for r in report.records}["twice"] == "aaaa111→bbbb222+dirty"


def test_the_report_says_which_code_trained_the_runs_and_which_rows_mix_versions(tmp_path):
    root = tmp_path / "runs"
    code_a, code_b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    for seed in range(2):
        write_run(root / f"kd{seed}", P1, "kd", seed, 70.0 + seed, 69.0, code=code_a)
        write_run(root / f"pckd{seed}", P1, "pckd", seed, 72.0 + seed, 71.0, code=code_a)
    _, markdown = build_report(root, tmp_path / "one", plot=False)
    assert f"Code: all 4 averaged runs were trained at {'a' * 12} (runs.csv" in markdown
    write_run(root / "kd2", P1, "kd", 2, 75.0, 74.0, code=code_b)
    _, markdown = build_report(root, tmp_path / "two", plot=False)
    versions = parse_table(markdown, "## Code versions")
    assert versions["kd"] == [f"{'a' * 12} (2), {'b' * 12}+dirty (1)"] and versions["pckd"] == [
        f"{'a' * 12} (2)"
    ]


def test_a_teacher_trained_inside_a_demo_run_is_listed_as_its_teacher_once(tmp_path):
    root = tmp_path / "runs"
    cached = "/cache/teachers/resnet56.pth"
    demo = write_run(root / "demo", P1, "pckd", 0, 72.0, 71.0, teacher_top1=72.34, teacher_sha256=SHA_A)
    # the demo's automatic teacher training: a from-scratch run of the teacher's architecture in <run>/teacher
    write_run(demo / "teacher", ("—", "resnet56"), "ce", 0, 73.0, 72.5, student_weights=cached)
    write_run(root / "pckd1", P1, "pckd", 1, 72.5, 71.5, teacher_top1=72.34, teacher_sha256=SHA_A)
    for seed in range(2):
        write_run(root / f"kd{seed}", P1, "kd", seed, 70.0, 69.0, teacher_top1=72.34, teacher_sha256=SHA_A)
        write_run(root / f"ce{seed}", P1, "ce", seed, 68.0, 67.0)  # the student from scratch: a result
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    nested = {r.run_dir: r for r in report.records}[demo / "teacher"]
    assert nested.status == "teacher" and str(demo) in nested.reason
    assert report.other_scratch == {}  # not a from-scratch result
    (pair,) = report.pairs
    assert report.cells[("student (scratch)", pair, "best")].values == (68.0, 68.0)
    assert report.teacher[pair].values == (72.34,)  # once, from the runs' measurement
    (teacher,) = report.teachers
    assert (teacher.arch, teacher.sha256, teacher.top1, teacher.runs) == ("resnet56", SHA_A, 72.34, 4)
    assert teacher.trained_in is nested
    table = parse_table(markdown, "## Teachers")
    assert list(table) == ["", "resnet56"]
    assert table["resnet56"][1:5] == ["/teachers/resnet56_seed0.pth", SHA_A, "72.34", "4"]
    assert table["resnet56"][5] == f"{demo / 'teacher'} (best 73.00, last 72.50)"


def test_holdout_runs_report_their_test_accuracy(tmp_path):
    root = tmp_path / "runs"
    test_top1 = {("kd", 0): 69.5, ("kd", 1): 70.1, ("pckd", 0): 71.0, ("pckd", 1): 71.9}
    for (method, seed), top1 in test_top1.items():
        run = write_run(
            root / f"{method}{seed}", P1, method, seed, 75.0, 74.0, test_top1=top1, test_top5=top1 + 20
        )
        edit_config(run, lambda cfg: cfg["data"].update(val_source="holdout"))
    out = tmp_path / "out"
    report, markdown = build_report(root, out, plot=False)
    (pair,) = report.pairs
    assert pair.dataset == "cifar100 [holdout val]"
    runs = {Path(r["run_dir"]).name: r for r in csv.DictReader((out / "runs.csv").open())}
    assert float(runs["pckd1"]["test_top1"]) == 71.9 and float(runs["pckd1"]["test_top5"]) == 91.9
    agg = {(r["row"], r["metric"]): r for r in csv.DictReader((out / "aggregate.csv").open())}
    assert float(agg[("pckd", "test")]["mean"]) == pytest.approx(71.45)
    assert float(agg[("pckd", "test")]["paired_delta_vs_kd"]) == pytest.approx((1.5 + 1.8) / 2)
    assert float(agg[("kd", "test_top5")]["mean"]) == pytest.approx(89.8)
    # kd 69.5, 70.1: std 0.6 / √2 = 0.42; pckd 71.0, 71.9: std 0.9 / √2 = 0.64
    table = parse_table(markdown, "## Test top-1 (%), the final student on the evaluation split")
    assert table["kd"] == ["69.80 ± 0.42"] and table["pckd"] == ["71.45 ± 0.64"]


def test_curves_count_epochs_from_one_on_integer_ticks(runs, tmp_path):
    from pckd_lightning.report.render import curves_figure

    root = tmp_path / "runs"
    for seed in range(2):
        run = write_run(root / f"kd{seed}", P1, "kd", seed, 70.0, 69.0 + seed, epochs=2)
        edit_config(run, lambda cfg: cfg["trainer"].update(max_epochs=2))
    report = build_report(root, tmp_path / "out", plot=False)[0]
    # the log's epoch 0 is the first epoch: seed 0 logged 68, 69; seed 1 69, 70
    assert report.curves[("kd", report.pairs[0])] == {1: 68.5, 2: 69.5}
    ax = curves_figure(report).axes[0]
    (line,) = ax.lines
    assert list(line.get_xdata()) == [1, 2]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [1.0, 2.0]
    assert "Test top-1" not in build_report(runs, tmp_path / "main", plot=False)[1]  # no holdout runs


@pytest.mark.parametrize("stream", ["per seed", "shared"])
def test_the_augmentation_stream_is_a_seed_runs_of_either_kind_share_their_row(tmp_path, stream):
    """data.aug_seed follows the run's seed by default, or a sweep shares one: seeds of one experiment either way."""
    root = tmp_path / "runs"
    for seed, best in enumerate([70.0, 71.0, 72.0]):
        run = write_run(root / f"kd{seed}", P1, "kd", seed, best, best)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["data"]["aug_seed"] = seed if stream == "per seed" else 7
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    report = build_report(root, tmp_path / "out", plot=False)[0]
    assert report.cells[("kd", report.pairs[0], "best")].values == (70.0, 71.0, 72.0)

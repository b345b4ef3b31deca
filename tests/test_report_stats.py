"""pckd-report's statistics: the Δ vs KD's 95 % interval (paired t, Welch), the seeds 80 % power needs, and
the schedule study (the same table per trainer.max_epochs)."""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from helpers import load_benchmark
from pckd_lightning.report import Interval, build_report, collect_runs, seeds_for_power
from pckd_lightning.report.render import format_interval
from report_runs import BEST, P1, PNG_MAGIC, edit_config, parse_table, write_run, write_runs

# Student's t quantiles t(0.975, df) from a printed table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T_975 = {1: 12.706, 2: 4.303, 4: 2.776, 8: 2.306, 9: 2.262}


@pytest.fixture
def runs(tmp_path) -> Path:
    return write_runs(tmp_path / "outputs")


def test_paired_interval_against_hand_computed_values(runs, tmp_path):
    """P1 pckd − kd per seed: 72.0 − 70.6, 71.5 − 70.9, 72.4 − 71.2 = 1.4, 0.6, 1.2."""
    out = tmp_path / "report"
    report, markdown = build_report(runs, out, plot=False)
    pair = report.pairs[1]
    interval = report.intervals[("pckd", pair, "best")]
    # mean 1.0667, sd √(0.3467 / 2) = 0.4163, se 0.4163 / √3 = 0.2404; ± 4.303 · 0.2404 = ± 1.0344
    differences = [a - b for a, b in zip(BEST[(P1, "pckd")], BEST[(P1, "kd")], strict=True)]
    assert differences == pytest.approx([1.4, 0.6, 1.2])
    assert (interval.test, interval.df, interval.sizes) == ("paired", 2, (3,))
    assert interval.delta == pytest.approx(1.066667, abs=1e-6)
    assert interval.low == pytest.approx(1.066667 - 1.034, abs=2e-3)
    assert interval.high == pytest.approx(1.066667 + 1.034, abs=2e-3)
    assert interval.excludes_zero and interval.verdict == "better"
    # the row's power: its own effect, mean / sd = 2.562
    assert interval.seeds_needed == seeds_for_power(
        statistics.mean(differences) / statistics.stdev(differences)
    )
    table = parse_table(markdown, "### Δ vs KD with its 95 % confidence interval, best-epoch top-1 (%)")
    assert table[""] == ["pair", "test", "seeds", "Δ", "95 % CI", "seeds for 80% power", "reading"]
    pckd = [cells for row, cells in table.items() if row == "pckd"]
    assert ["resnet56 → resnet20", "paired", "3", "+1.07", "[+0.03, +2.10] ✓"] in [c[:5] for c in pckd]
    aggregate = {
        (r["student"], r["row"], r["metric"]): r for r in csv.DictReader((out / "aggregate.csv").open())
    }
    line = aggregate[("resnet20", "pckd", "best")]
    assert line["delta_test"] == "paired" and line["delta_ci_excludes_0"] == "True"
    assert float(line["delta_ci_low"]) == pytest.approx(interval.low)
    assert int(line["seeds_for_80_power"]) == interval.seeds_needed


@pytest.mark.parametrize("pckd_seeds", [(3, 4, 5), (2, 3, 4)], ids=["no common seed", "one common seed"])
def test_welch_interval_for_a_row_without_two_common_seeds(tmp_path, pckd_seeds):
    """KD on seeds 0-2, PCKD on seeds 3-5 (or 2-4: one common seed is no paired sample): Welch's interval,
    said so, and no verdict; the Δ table marks the Δ as one over other seeds."""
    root = tmp_path / "runs"
    for seed, best in enumerate([70.0, 71.0, 72.0]):
        write_run(root / f"kd{seed}", P1, "kd", seed, best, best)
    for seed, best in zip(pckd_seeds, [72.0, 73.0, 74.0], strict=True):
        write_run(root / f"pckd{seed}", P1, "pckd", seed, best, best)
    out = tmp_path / "out"
    report, markdown = build_report(root, out, plot=False)
    interval = report.intervals[("pckd", report.pairs[0], "best")]
    # Δ = 73 − 71 = 2; s² = 1 in both: se = √(1/3 + 1/3) = 0.8165; ν = (2/3)² / (2 · (1/3)² / 2) = 4;
    # ± 2.776 · 0.8165 = ± 2.267: [−0.267, +4.267] includes 0
    assert (interval.test, interval.sizes, interval.seeds_needed) == ("Welch", (3, 3), None)
    assert interval.df == pytest.approx(4.0)
    assert interval.low == pytest.approx(2 - T_975[4] * math.sqrt(2 / 3), abs=1e-3)
    assert interval.high == pytest.approx(2 + T_975[4] * math.sqrt(2 / 3), abs=1e-3)
    assert not interval.excludes_zero and interval.verdict == "not resolved"
    table = parse_table(markdown, "### Δ vs KD with its 95 % confidence interval, best-epoch top-1 (%)")
    assert table["pckd"] == [
        "Welch",
        "3 vs 3",
        "+2.00",
        "[-0.27, +4.27]",
        "—",
        "not resolved (the interval includes 0)",
    ]
    delta = parse_table(markdown, "### Δ vs KD, best-epoch top-1 (%)")
    assert delta["pckd"][0] == "+2.00 †" and "†: run on other seeds than KD's" in markdown
    # a row whose interval includes 0 is called neither better nor worse anywhere in the report
    assert not [
        line for line in markdown.splitlines() if "pckd" in line and ("better" in line or "worse" in line)
    ]
    line = next(
        r
        for r in csv.DictReader((out / "aggregate.csv").open())
        if (r["row"], r["metric"]) == ("pckd", "best")
    )
    assert (line["delta_test"], line["delta_ci_excludes_0"], line["seeds_for_80_power"]) == (
        "Welch",
        "False",
        "",
    )


def test_seeds_for_power_against_published_values_and_a_simulation():
    """G*Power, one-sample (paired) t-test, two-sided α = 0.05, power 0.8: d = 0.5 -> 34, 0.8 -> 15, 1.0 -> 10."""
    assert [seeds_for_power(d) for d in (0.5, 0.8, 1.0, -1.0)] == [34, 15, 10, 10]
    assert seeds_for_power(0.0) is None and seeds_for_power(0.05) is None  # beyond 1000 seeds
    # the same answer another way: simulated paired differences with d = 1 (mean 1, sd 1)
    rng = np.random.default_rng(0)

    def simulated_power(n: int, trials: int = 40_000) -> float:
        draws = rng.normal(1.0, 1.0, size=(trials, n))
        t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > T_975[n - 1]))

    assert simulated_power(10) > 0.79  # 0.803
    assert simulated_power(9) < 0.77  # 0.748: nine seeds are not enough


def test_seeds_for_power_of_a_large_effect_is_small_not_lost_in_the_tail():
    """Far in the tail SciPy's noncentral t cdf gives NaN; that must not read as "power not reached"."""
    rng = np.random.default_rng(1)

    def simulated_power(effect: float, n: int, trials: int = 40_000) -> float:
        draws = rng.normal(effect, 1.0, size=(trials, n))
        t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > T_975[n - 1]))

    # d = 7.01 (differences 0.601, 0.701, 0.801): two seeds fall short, three are plenty
    assert simulated_power(7.01, 2) < 0.6 and simulated_power(7.01, 3) > 0.99
    assert seeds_for_power(7.01) == 3 and seeds_for_power(-7.01) == 3
    # d = 26.8: P(|T| > 12.71) with 1 degree of freedom is about 0.997 already at two seeds
    assert simulated_power(26.8, 2) > 0.99 and seeds_for_power(26.8) == 2
    # the same gain on every seed, up to float noise (sd ~1e-14): any two seeds tell it
    differences = [1.12 + 1e-14, 1.12, 1.12 - 1e-14]
    assert seeds_for_power(statistics.mean(differences) / statistics.stdev(differences)) == 2


def test_a_row_trained_in_another_experiment_than_kd_says_so_in_its_label(tmp_path):
    """KD at lr 0.05; PCKD mostly at lr 0.1 (4 seeds), also at 0.05 (3 seeds); scratch at batch 32 only: the
    plain rows are in KD's experiment, and any other names what differs."""
    root = tmp_path / "runs"

    def run(name: str, method: str, seed: int, best: float, **optimizer: float) -> None:
        folder = write_run(root / f"{name}{seed}", P1, method, seed, best, best)
        edit_config(folder, lambda cfg: cfg.update(optimizer={"_target_": "torch.optim.SGD", **optimizer}))

    for seed, best in enumerate([70.0, 71.0, 72.0]):
        run("kd", "kd", seed, best, lr=0.05)
        run("pckd", "pckd", seed, best + 1.0, lr=0.1)
        run("ce", "ce", seed, best - 3.0, lr=0.05)
        edit_config(root / f"ce{seed}", lambda cfg: cfg["data"].update(batch_size=32))
        run("pckd_same", "pckd", seed, best + 0.5, lr=0.05)
    run("pckd", "pckd", 3, 74.0, lr=0.1)  # PCKD's most common setting is not KD's experiment
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    assert set(report.rows) == {"kd", "pckd", "pckd (optimizer.lr=0.1)"}
    pair = report.pairs[0]
    assert report.delta[("pckd", pair, "best")] == pytest.approx(0.5)
    assert report.delta[("pckd (optimizer.lr=0.1)", pair, "best")] == pytest.approx(72.5 - 71.0)
    # the scratch runs, in another batch size than KD's, are not the pair's scratch row
    assert not [k for k in report.intervals if k[0] == "student (scratch)"]
    assert "| resnet20 (data.batch_size=32) |" in markdown  # listed with the other from-scratch runs


P110 = ("resnet110", "resnet20")


def with_lr(folder: Path, lr: float) -> None:
    edit_config(folder, lambda cfg: cfg.update(optimizer={"_target_": "torch.optim.SGD", "lr": lr}))


def write_lr_runs(root: Path, runs: list[tuple[tuple[str, str], str, float, float]]) -> None:
    """Seeds 0-2 of each (pair, method, lr, best): best and last ``best + seed``, SGD at ``lr``."""
    for pair, method, lr, best in runs:
        for seed in range(3):
            folder = root / f"{pair[0]}_{method}{lr}_{seed}"
            with_lr(write_run(folder, pair, method, seed, best + seed, best + seed), lr)


def test_a_students_scratch_runs_serve_only_the_pairs_whose_kd_ran_their_experiment(tmp_path):
    """resnet20 distilled from resnet56 (KD at lr 0.05) and from resnet110 (KD at lr 0.01); scratch resnet20
    at lr 0.01 only: it is resnet110's scratch row, and resnet56's pair has none (no Δ across experiments)."""
    root = tmp_path / "runs"
    write_lr_runs(root, [(P1, "kd", 0.05, 70.0), (P110, "kd", 0.01, 69.0), (P1, "ce", 0.01, 66.0)])
    report, _ = build_report(root, tmp_path / "out", plot=False)
    by_teacher = {pair.teacher: pair for pair in report.pairs}
    assert report.cells[("student (scratch)", by_teacher["resnet110"], "best")].values == (66.0, 67.0, 68.0)
    assert ("student (scratch)", by_teacher["resnet56"], "best") not in report.cells
    assert report.intervals[("student (scratch)", by_teacher["resnet110"], "best")].delta == pytest.approx(
        -3.0
    )


def test_scratch_runs_of_each_teachers_kd_experiment_fill_that_pairs_scratch_row(tmp_path):
    """As above with scratch runs at lr 0.05 too (resnet56's KD experiment, the second teacher in sorted
    order): each pair's scratch row holds the runs of its KD's experiment, none is hidden among the other
    from-scratch runs."""
    root = tmp_path / "runs"
    runs = [(P1, "kd", 0.05, 70.0), (P110, "kd", 0.01, 69.0), (P1, "ce", 0.01, 66.0), (P1, "ce", 0.05, 64.0)]
    write_lr_runs(root, runs)
    report, _ = build_report(root, tmp_path / "out", plot=False)
    by_teacher = {pair.teacher: pair for pair in report.pairs}
    assert report.cells[("student (scratch)", by_teacher["resnet110"], "best")].values == (66.0, 67.0, 68.0)
    assert report.cells[("student (scratch)", by_teacher["resnet56"], "best")].values == (64.0, 65.0, 66.0)
    assert report.intervals[("student (scratch)", by_teacher["resnet56"], "best")].delta == pytest.approx(
        -6.0
    )
    assert not report.other_scratch
    # resumed alike, one run at each lr: neither is plain, and the two experiments never share a label
    resumed = {"checkpoint": "x/last.ckpt", "completed_epochs": 5, "config_checked": True}
    resumed["changed"] = {"trainer.val_check_interval": {"checkpoint": 0.5, "run": 1.0}}
    for lr, best in ((0.01, 50.0), (0.05, 40.0)):
        with_lr(write_run(root / f"resumed{lr}", P1, "ce", 0, best, best, resumed_from=resumed), lr)
    report, _ = build_report(root, tmp_path / "out2", plot=False)
    labels = {r.run_dir.name: r.label for r in report.records}
    assert labels["resumed0.01"] != labels["resumed0.05"] and "lr=0.05" in labels["resumed0.05"]
    assert sorted(s.values for (_, _, metric), s in report.other_scratch.items() if metric == "best") == [
        (40.0,),
        (50.0,),
    ]


def test_a_shared_augmentation_stream_splits_a_methods_rows_but_not_kds_experiment(tmp_path):
    """A teacher-cache sweep (data.aug_seed=0 for every seed) beside scratch runs and one KD seed on their own
    streams: the scratch row and its Δ stay (the stream is not the experiment), KD's own-stream run is a row
    of its own, labelled by what its stream followed."""
    root = tmp_path / "runs"
    for seed in range(3):
        kd = write_run(root / f"kd{seed}", P1, "kd", seed, 70.0 + seed, 70.0, aug_stream="shared")
        edit_config(kd, lambda cfg: cfg["data"].update(aug_seed=0))
        write_run(root / f"ce{seed}", P1, "ce", seed, 66.0 + seed, 66.0, aug_stream="seed")
    write_run(root / "kd_own0", P1, "kd", 0, 60.0, 60.0, aug_stream="seed")
    report, _ = build_report(root, tmp_path / "out", plot=False)
    pair = report.pairs[0]
    assert report.cells[("kd", pair, "best")].values == (70.0, 71.0, 72.0)
    assert report.cells[("kd (data.aug_seed=seed)", pair, "best")].values == (60.0,)
    assert report.cells[("student (scratch)", pair, "best")].values == (66.0, 67.0, 68.0)
    assert report.intervals[("student (scratch)", pair, "best")].delta == pytest.approx(-4.0)


def test_what_follows_the_method_does_not_split_a_row_from_kds_experiment(tmp_path):
    """KD runs its teacher in float32 and PCKD taps its student: the scratch row (no teacher) and the PCKD row
    stay plain, since neither is the experiment's setting."""
    root = tmp_path / "runs"
    for seed, best in enumerate([70.0, 71.0, 72.0]):
        for method, offset in (("kd", 0.0), ("pckd", 1.0), ("ce", -3.0)):
            run = write_run(root / f"{method}{seed}", P1, method, seed, best + offset, best + offset)
            module = {"lr_scaling": "none", "sync_batchnorm": False}
            if method != "ce":
                module["teacher_options"] = {"float32": method == "kd"}
            edit_config(run, lambda cfg, module=module: cfg.update(module=module))
            if method == "pckd":
                edit_config(run, lambda cfg: cfg["model"]["student"].update(taps={"classifier": "fc"}))
    report, _ = build_report(root, tmp_path / "out", plot=False)
    assert set(report.rows) == {"kd", "pckd"}
    assert ("student (scratch)", report.pairs[0], "best") in report.intervals


def test_runs_without_their_config_keep_their_length_apart(tmp_path):
    """Without config.yaml a run's length is the epochs it trained: 10 and 40 epochs of one seed are two
    rows, neither superseding the other."""
    root = tmp_path / "runs"
    for epochs, best in ((10, 60.0), (40, 70.0)):
        run = write_run(root / f"kd_e{epochs}", P1, "kd", 0, best, best, epochs=epochs)
        (run / "config.yaml").unlink()
    records = collect_runs(root)
    assert sorted(r.max_epochs for r in records) == [10, 40] and all(r.complete for r in records)
    report, _ = build_report(root, tmp_path / "out", plot=False)
    assert sorted(report.rows) == ["kd", "kd (trainer.max_epochs=10)"]


def test_a_bound_near_0_is_printed_so_that_it_does_not_read_as_0():
    check = Interval("paired", 0.4, 0.004, 0.8, 2, (3,))
    assert format_interval(check) == "[+0.004, +0.80] ✓"
    assert format_interval(dataclasses.replace(check, low=-0.0004)) == "[-0.0004, +0.80]"
    assert format_interval(dataclasses.replace(check, low=0.0)) == "[+0.00, +0.80]"
    assert format_interval(dataclasses.replace(check, low=0.5)) == "[+0.50, +0.80] ✓"


def write_length(root, method: str, seed: int, length: int, best: float, last: float) -> None:
    """A run of ``length`` epochs with the step schedule scaled to it (x0.1 at 62.5/75/87.5 %) and, for
    PCKD, a feature-alignment warm-up of a fifth of the run."""
    run = write_run(root / method / f"e{length}" / f"seed{seed}", P1, method, seed, best, last, epochs=length)
    milestones = [math.ceil(f * length) for f in (0.625, 0.75, 0.875)]

    def edit(cfg):
        cfg["trainer"]["max_epochs"] = length
        cfg["scheduler"] = {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "milestones": milestones}
        if method == "pckd":
            cfg["distill"]["terms"]["feature_align"]["warmup_epochs"] = length // 5

    edit_config(run, edit)


LENGTH_BEST = {  # (method, length): best top-1 of seeds 0, 1, 2; the last is 1 lower
    ("kd", 10): [60.0, 61.0, 62.0],
    ("pckd", 10): [59.0, 60.5, 61.0],
    ("kd", 20): [65.0, 66.0, 66.5],
    ("pckd", 20): [66.0, 67.5, 68.0],
}


def test_the_schedule_study_is_reported_per_length(tmp_path):
    root = tmp_path / "runs"
    for (method, length), values in LENGTH_BEST.items():
        for seed, best in enumerate(values):
            write_length(root, method, seed, length, best, best - 1)
    out = tmp_path / "out"
    report, markdown = build_report(root, out)
    assert list(report.schedule) == [10, 20]
    pair = report.pairs[0]
    for length in (10, 20):
        table = report.schedule[length]
        assert table.rows == ["kd", "pckd"]  # the length, its milestones and warm-up make no variant
        for method in ("kd", "pckd"):
            assert table.cells[(method, pair, "best")].values == tuple(LENGTH_BEST[(method, length)])
        differences = [
            a - b for a, b in zip(LENGTH_BEST[("pckd", length)], LENGTH_BEST[("kd", length)], strict=True)
        ]
        interval = table.comparison.intervals[("pckd", pair, "best")]
        mean, sd = statistics.mean(differences), statistics.stdev(differences)
        assert interval.delta == pytest.approx(mean)
        assert interval.low == pytest.approx(mean - T_975[2] * sd / math.sqrt(3), abs=1e-3)
    # 10 epochs: −1, −0.5, −1 -> −0.83 ± 0.29, ± 4.303 · 0.1667: [−1.55, −0.12], worse
    # 20 epochs: +1, +1.5, +1.5 -> +1.33 ± 0.29: [+0.62, +2.05], better
    assert report.schedule[10].comparison.intervals[("pckd", pair, "best")].verdict == "worse"
    assert report.schedule[20].comparison.intervals[("pckd", pair, "best")].verdict == "better"
    ten = parse_table(markdown, "### 10 epochs")
    assert ten["pckd"][:4] == ["60.17 ± 1.04", "59.17 ± 1.04", "-0.83 ± 0.29", "[-1.55, -0.12] ✓"]
    assert parse_table(markdown, "### 20 epochs")["pckd"][2:4] == ["+1.33 ± 0.29", "[+0.62, +2.05] ✓"]
    lines = list(csv.DictReader((out / "schedule.csv").open()))
    line = next(r for r in lines if (r["row"], r["epochs"], r["metric"]) == ("pckd", "20", "best"))
    assert float(line["delta_vs_kd"]) == pytest.approx(4 / 3) and line["delta_ci_excludes_0"] == "True"
    assert float(line["mean"]) == pytest.approx(statistics.mean(LENGTH_BEST[("pckd", 20)]))
    assert {(r["row"], r["epochs"]) for r in lines} == {(m, str(e)) for m, e in LENGTH_BEST}
    png = (out / "schedule.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000


def test_a_row_with_another_schedule_than_kds_at_its_length_is_labelled_not_compared(tmp_path):
    """PCKD run only at 10 epochs but with the unscaled milestones (150, 180, 210: no decay in 10 epochs):
    its milestones take one value at its one length, yet not KD's there, so the row names them."""
    root = tmp_path / "runs"
    for (method, length), values in LENGTH_BEST.items():
        for seed, best in enumerate(values):
            if method == "kd":
                write_length(root, method, seed, length, best, best - 1)
            elif length == 10:
                write_length(root, method, seed, length, best, best - 1)
                edit_config(
                    root / method / f"e{length}" / f"seed{seed}",
                    lambda cfg: cfg["scheduler"].update(milestones=[150, 180, 210]),
                )
    report, _ = build_report(root, tmp_path / "out", plot=False)
    (label,) = [row for row in report.schedule[10].rows if row != "kd"]
    assert label.startswith("pckd (") and "milestones=[150, 180, 210]" in label, label


def test_a_length_row_on_fewer_seeds_than_kd_shows_its_n_and_both_deltas(tmp_path):
    """PCKD on seeds 0 and 1 only, KD on 0-2: the tables say (n=2); schedule.csv gives the difference of the
    means and the paired Δ over seeds 0 and 1 in columns of their own, as aggregate.csv does."""
    root = tmp_path / "runs"
    for (method, length), values in LENGTH_BEST.items():
        for seed, best in enumerate(values[: 2 if method == "pckd" else 3]):
            write_length(root, method, seed, length, best, best - 1)
    out = tmp_path / "out"
    _, markdown = build_report(root, out, plot=False)
    row = parse_table(markdown, "### 20 epochs")["pckd"]
    assert row[0] == "66.75 ± 1.06 (n=2)" and row[2] == "+1.25 ± 0.35 (n=2)"  # +1, +1.5 over seeds 0, 1
    line = next(
        r
        for r in csv.DictReader((out / "schedule.csv").open())
        if (r["row"], r["epochs"], r["metric"]) == ("pckd", "20", "best")
    )
    assert float(line["delta_vs_kd"]) == pytest.approx(66.75 - statistics.mean(LENGTH_BEST[("kd", 20)]))
    assert float(line["paired_delta_vs_kd"]) == pytest.approx(1.25) and line["paired_seeds"] == "0;1"


def test_a_length_whose_scratch_runs_finished_first_shows_them_in_its_pair(tmp_path):
    """A study in progress: KD and PCKD at 10 epochs, only the from-scratch student at 20 so far."""
    root = tmp_path / "runs"
    for (method, length), values in LENGTH_BEST.items():
        if length == 10:
            for seed, best in enumerate(values):
                write_length(root, method, seed, length, best, best - 1)
    for length, values in ((10, [45.0, 46.0, 47.0]), (20, [50.0, 51.0])):
        for seed, best in enumerate(values):
            write_length(root, "ce", seed, length, best, best - 1)
    report, markdown = build_report(root, tmp_path / "out")
    pair = report.pairs[0]
    assert report.schedule[20].rows == ["student (scratch)"]
    assert report.schedule[20].cells[("student (scratch)", pair, "best")].values == (50.0, 51.0)
    assert parse_table(markdown, "### 20 epochs")["student (scratch)"][:2] == ["50.50 ± 0.71", "49.50 ± 0.71"]
    # before any distilled run: no pair yet, each length says so instead of an empty heading
    _, markdown = build_report(root / "ce", tmp_path / "scratch_only")
    section = markdown.split("### 20 epochs")[1]
    assert section.split("##")[0].strip() == "No run of a pair has finished at this length yet."
    assert not (tmp_path / "scratch_only" / "schedule.png").exists()  # no Δ to draw
    for (method, length), values in LENGTH_BEST.items():  # one seed each: a Δ, but no interval to draw
        write_length(tmp_path / "one_seed", method, 0, length, values[0], values[0] - 1)
    report, _ = build_report(tmp_path / "one_seed", tmp_path / "one_seed_out")
    assert list(report.schedule) == [10, 20] and not (tmp_path / "one_seed_out" / "schedule.png").exists()


def test_the_plain_rows_of_a_study_are_all_at_kds_most_common_length(tmp_path):
    """KD at 10 epochs (3 seeds) and 20 (2), PCKD at 10 (1) and 20 (3), scratch at 10 (3) and 20 (5): the
    unlabelled rows of the main table are all at 10 epochs, KD's most common length (the distilled runs, and
    all runs, are more often at 20), so the Δ vs KD keeps its baseline; the other rows name their length."""
    root = tmp_path / "runs"
    seeds = {("kd", 10): 3, ("kd", 20): 2, ("pckd", 10): 1, ("pckd", 20): 3}
    for (method, length), values in LENGTH_BEST.items():
        for seed, best in enumerate(values[: seeds[(method, length)]]):
            write_length(root, method, seed, length, best, best - 1)
    for length, values in ((10, [45.0, 46.0, 47.0]), (20, [50.0, 51.0, 52.0, 53.0, 54.0])):
        for seed, best in enumerate(values):
            write_length(root, "ce", seed, length, best, best - 1)
    report, markdown = build_report(root, tmp_path / "out", plot=False)
    assert "Unlabelled rows are 10-epoch runs (KD's length)" in markdown
    lines = csv.DictReader((tmp_path / "out" / "aggregate.csv").open())
    lengths = {(r["row"], r["metric"]): r["epochs"] for r in lines if r["teacher"]}  # the pair's cells
    assert lengths[("kd", "best")] == lengths[("student (scratch)", "best")] == "10"
    assert [n for (row, metric), n in lengths.items() if row.startswith("kd (") and metric == "best"] == [
        "20"
    ]
    pair = report.pairs[0]
    assert report.cells[("student (scratch)", pair, "best")].values == (45.0, 46.0, 47.0)
    for method in ("kd", "pckd"):
        shown = tuple(LENGTH_BEST[(method, 10)][: seeds[(method, 10)]])
        assert report.cells[(method, pair, "best")].values == shown
        (longer,) = [row for row in report.rows if row.startswith(f"{method} (")]
        assert "trainer.max_epochs=20" in longer
        assert len(report.cells[(longer, pair, "best")].values) == seeds[(method, 20)]
    assert report.delta[("pckd", pair, "best")] == pytest.approx(59.0 - 61.0)  # both at 10 epochs


def test_one_length_writes_no_schedule_study(runs, tmp_path):
    report, markdown = build_report(runs, tmp_path / "out")
    assert report.schedule == {} and "Schedule study" not in markdown
    assert (
        not (tmp_path / "out" / "schedule.csv").exists() and not (tmp_path / "out" / "schedule.png").exists()
    )


@pytest.mark.slow
@pytest.mark.cifar
def test_the_tiny_schedule_profile_is_reported_per_length(tmp_path, cifar_root):
    """Real runs of compare.py's schedule layout (<row>/e<epochs>/seed<seed>): DKD's warm-up and the scaled
    milestones follow the length, so each method is one row at each length, paired with KD there."""
    compare = load_benchmark("compare", "compare")
    profile = dataclasses.replace(compare.PROFILES["tiny-schedule"], methods=("kd", "dkd"), teacher_epochs=1)
    compare.compare(profile, str(cifar_root), tmp_path)
    report = build_report(tmp_path, tmp_path / "report")[0]
    assert list(report.schedule) == [1, 2]
    (pair,) = report.pairs
    for length, table in report.schedule.items():
        assert table.rows == ["kd", "dkd"], length
        assert table.cells[("dkd", pair, "best")].seeds == (0, 1)
        assert table.comparison.paired[("dkd", pair, "best")].seeds == (0, 1)
    (teacher,) = report.teachers
    assert teacher.trained_in is not None and teacher.trained_in.run_dir == tmp_path / "teachers" / "resnet14"
    assert report.other_scratch == {}  # the teacher's own run is no from-scratch result
    lines = list(csv.DictReader((tmp_path / "report" / "schedule.csv").open()))
    assert {(r["row"], r["epochs"]) for r in lines} == {(m, e) for m in ("kd", "dkd") for e in ("1", "2")}
    assert (tmp_path / "report" / "schedule.png").read_bytes()[:8] == PNG_MAGIC

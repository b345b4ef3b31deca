"""What one augmentation stream per sweep buys (issue 27, item 1): the spread of a paired method difference.

The ablation's setting (the ``cpu`` profile's data, resnet20 -> resnet8, 20 epochs): CE·1 + KD·1 against KD
at seeds 0, 1, 2, with three ways of drawing the augmentations:

- ``shared``: one ``data.aug_seed`` (0) for every run: each image's views are the same in every run;
- ``per_seed``: ``data.aug_seed = seed`` (the default): the two runs of a pair share a stream, seeds differ;
- ``independent``: every run its own stream (KD ``seed``, CE·1 + KD·1 ``1000 + seed``): no common numbers.

A run's seed still sets the student's initialisation and the batch order in every arm. The table is the
paired Δ = (CE·1 + KD·1) − KD per seed, its mean and std per arm, and the ratio of each arm's variance to the
independent arm's with a 95 % F interval (2 and 2 degrees of freedom: wide). Runs that finished are skipped
and a stopped run continues from its last checkpoint, so the script resumes where it was.

    python benchmarks/aug_stream.py --root ../shared/data --out outputs/aug_stream
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:  # its sibling compare, also when loaded from a file path
    sys.path.append(str(REPO / "benchmarks"))
from compare import PROFILES, run_once, student_run, teacher_path, train_teacher  # noqa: E402

PROFILE = PROFILES["ablation"]
PAIR = PROFILE.pairs[0]
ROWS = ("kd", "ce1_kd1")
SEEDS = (0, 1, 2)
#: the stream of each arm's run of ``row`` at ``seed``
ARMS = {
    "shared": lambda row, seed: 0,
    "per_seed": lambda row, seed: seed,
    "independent": lambda row, seed: seed if row == "kd" else 1000 + seed,
}


def run_folder(out: Path, row: str, aug_seed: int, seed: int) -> Path:
    return out / f"{PAIR[0]}_{PAIR[1]}" / row / f"aug{aug_seed}" / f"seed{seed}"


def planned_runs() -> list[tuple[int, str, int]]:
    """(seed, row, aug_seed) of every run some arm needs, each once, seed by seed."""
    return sorted({(seed, row, arm(row, seed)) for arm in ARMS.values() for seed in SEEDS for row in ROWS})


def train(root: str, out: Path) -> None:
    """The teacher, then every (row, seed, stream) that some arm needs, each once."""
    weights = teacher_path(out, PAIR[0], None)
    train_teacher(PROFILE, root, PAIR[0], weights)
    for seed, row, aug_seed in planned_runs():
        run = student_run(PROFILE, row, root, PAIR, weights, seed, PROFILE.lengths[0])
        overrides = [*run, f"data.aug_seed={aug_seed}"]
        run_once(f"{row} seed {seed} aug_seed {aug_seed}", overrides, run_folder(out, row, aug_seed, seed))


def result(out: Path, row: str, aug_seed: int, seed: int, key: str) -> float:
    summary = json.loads((run_folder(out, row, aug_seed, seed) / "summary.json").read_text())
    return float(summary[key])


def table(out: Path) -> tuple[str, dict]:
    """The markdown table of each arm's paired Δ (best and last) and the numbers behind it."""
    numbers: dict[str, dict] = {}
    for name, arm in ARMS.items():
        numbers[name] = {}
        for key in ("best_top1", "last_top1"):
            deltas = [
                result(out, "ce1_kd1", arm("ce1_kd1", s), s, key) - result(out, "kd", arm("kd", s), s, key)
                for s in SEEDS
            ]
            numbers[name][key] = {
                "deltas": deltas,
                "mean": statistics.mean(deltas),
                "sd": statistics.stdev(deltas),
            }
    dof = len(SEEDS) - 1
    low, high = stats.f.ppf([0.025, 0.975], dof, dof)
    lines = [
        "| stream | Δ per seed, best | Δ best (mean ± sd) | Δ last (mean ± sd) | var / var(independent), best [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    reference = numbers["independent"]["best_top1"]["sd"] ** 2
    for name, arm_numbers in numbers.items():
        best, last = arm_numbers["best_top1"], arm_numbers["last_top1"]
        ratio = best["sd"] ** 2 / reference if reference > 0 else float("nan")
        arm_numbers["variance_ratio_best"] = {"ratio": ratio, "ci95": [ratio / high, ratio / low]}
        per_seed = ", ".join(f"{d:+.2f}" for d in best["deltas"])
        lines.append(
            f"| `{name}` | {per_seed} | {best['mean']:+.2f} ± {best['sd']:.2f} | "
            f"{last['mean']:+.2f} ± {last['sd']:.2f} | {ratio:.2f} [{ratio / high:.2f}, {ratio / low:.2f}] |"
        )
    return "\n".join(lines), numbers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data", help="folder holding cifar-100-python")
    parser.add_argument("--out", type=Path, default=Path("outputs/aug_stream"))
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    train(args.root, args.out)
    markdown, numbers = table(args.out)
    (args.out / "aug_stream.json").write_text(json.dumps(numbers, indent=2))
    print(markdown)
    print(
        f"[aug_stream] {time.perf_counter() - start:.0f} s in all; numbers in {args.out / 'aug_stream.json'}"
    )


if __name__ == "__main__":
    main()

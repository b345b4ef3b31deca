"""Run folders as ``fit`` writes them, with known accuracies, and the report's tables parsed back: what the
report tests (test_report.py, test_report_stats.py) build on."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_EPOCHS = 10
P1 = ("resnet56", "resnet20")
P2 = ("resnet32x4", "resnet8x4")
TERMS = {
    "ce": {"ce": 1.0},
    "kd": {"ce": 0.1, "kd": 0.9},
    "pckd": {"ce": 1.0, "kd": 1.0, "category_contrast": 0.05, "feature_align": 20.0},
    "crd": {"ce": 1.0, "kd": 0.8, "crd": 0.8},
}
# best-epoch top-1 (%) of seeds 0, 1, 2; the last-epoch top-1 is 0.3 lower in every run
BEST = {
    (P1, "ce"): [69.0, 69.5, 70.1],
    (P1, "kd"): [70.6, 70.9, 71.2],
    (P1, "pckd"): [72.0, 71.5, 72.4],
    (P2, "ce"): [72.3, 72.6, 72.1],
    (P2, "kd"): [73.2, 73.6, 73.4],
    (P2, "pckd"): [76.1, 76.4, 75.9],
}
# P1 is distilled from one teacher checkpoint (counted once); P2 from one teacher per seed
TEACHER_TOP1 = {P1: [72.34, 72.34, 72.34], P2: [79.0, 79.4, 79.6]}


def write_run(
    folder: Path,
    pair: tuple[str, str],
    method: str,
    seed: int,
    best: float,
    last: float,
    epochs: int = MAX_EPOCHS,
    teacher_top1: float | None = None,
    summary: bool = True,
    **fields,
) -> Path:
    """A run folder as `fit` writes it: config.yaml, summary.json (plus ``fields``), csv/metrics.csv."""
    teacher_arch, student = pair
    scratch = method == "ce"
    teacher_ckpt = f"/teachers/{teacher_arch}_seed{seed if pair == P2 else 0}.pth"
    folder.mkdir(parents=True)
    terms = {name: {"_target_": "x.Term", "weight": w} for name, w in TERMS[method].items()}
    config = {
        "data": {"_target_": "pckd_lightning.data.CIFAR100DataModule", "root": "/data", "views": 1},
        "model": {
            "student": {"_target_": "pckd_lightning.models.create_model", "name": student},
            "teacher": None if scratch else {"name": teacher_arch, "checkpoint": teacher_ckpt},
        },
        "distill": {"name": method, "views": 1, "preview": None, "terms": terms},
        "trainer": {"_target_": "lightning.Trainer", "max_epochs": MAX_EPOCHS},
        "seed": seed,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if not summary:
        return folder
    record = {
        "method": method,
        "student": student,
        "teacher": None if scratch else teacher_arch,
        "seed": seed,
        "epochs": epochs,
        "teacher_top1": None if scratch else teacher_top1,
        "best_top1": best,
        "last_top1": last,
        "last_top5": 95.0,
        "skipped_terms": {},
        "terms": TERMS[method],
        "output_dir": str(folder),
        **fields,
    }
    (folder / "summary.json").write_text(json.dumps(record))  # NaN is written as NaN, like json.dumps does
    (folder / "csv").mkdir()
    with (folder / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss_epoch", "val/top1", "val/top1_best", "val/top5"])
        for epoch in range(epochs):
            writer.writerow([epoch, 10 * epoch + 9, 1.0, "", "", ""])
            val = last - (epochs - 1 - epoch)  # percent, as the module logs it
            writer.writerow([epoch, 10 * epoch + 9, "", val, val, 90.0])
    return folder


def write_runs(root: Path) -> Path:
    """The two pairs of BEST over three seeds, a single-seed crd row and three runs that do not count."""
    for (pair, method), values in BEST.items():
        for seed, best in enumerate(values):
            write_run(
                root / f"{pair[1]}_{method}" / f"seed{seed}",
                pair,
                method,
                seed,
                best,
                best - 0.3,
                teacher_top1=TEACHER_TOP1[pair][seed],
            )
    # a single-seed method: its cells show "± n/a" and (n=1)
    write_run(root / "crd" / "seed0", P1, "crd", 0, 71.7, 71.4, teacher_top1=72.34)
    # listed, never averaged in: no summary (killed), a NaN accuracy (diverged), a short run
    write_run(root / "killed", P1, "pckd", 3, 0.0, 0.0, summary=False)
    write_run(root / "nan", P1, "kd", 4, math.nan, math.nan, teacher_top1=72.34)
    write_run(root / "short", P2, "kd", 5, 99.0, 99.0, epochs=4, teacher_top1=79.0)
    (root / "killed" / ".hydra").mkdir()
    (root / "killed" / ".hydra" / "config.yaml").write_text("hydra: {}\n")  # not a run folder
    return root


def parse_table(markdown: str, heading: str) -> dict[str, list[str]]:
    """``{row label: cells}`` of the first table under ``heading``; key "" holds the header cells."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    table = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        table["" if not table else cells[0]] = cells[1:]
    return table


def edit_config(run: Path, edit) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    edit(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))

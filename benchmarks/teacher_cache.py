"""Training epochs with the teacher live against the teacher cache (``module.teacher_options.cache``), as ratios.

For each pair and method, on the ``cpu`` profile's data (real CIFAR-100, first 20 classes, 150 images each)
three one-epoch runs through the real app, one after another: live (no cache), the run that fills the cache,
and a run that reads it; per pair also the student alone (``distill=ce``, no teacher: the floor a cache can
reach) and a one-step run, whose time (composing, building, Lightning's start) is taken off every other.
Validation and the teacher's accuracy check are off, so what remains is the training epoch. Printed: seconds per run, live / cached (the speed-up
of every student after the first), the filling run's cost against a live run, the break-even number of
students, and what a sweep of 5 methods x 3 seeds from one teacher would take end to end (the first run
fills, the others read; every method assumed to read only logits and embeddings, as the logit methods and
PCKD do). Teachers are random-init files: speed does not depend on their weights.

    python benchmarks/teacher_cache.py --root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pckd_lightning.models import create_model
from pckd_lightning.run import fit
from pckd_lightning.run.origin import code_version, machine_of

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PAIRS = (("resnet20", "resnet8"), ("resnet56", "resnet20"))
METHODS = ("kd", "pckd")
DATA = (
    "data=cifar100",
    "data.class_subset=20",
    "data.train_per_class=150",
    "data.val_per_class=50",
    "data.num_workers=1",
    "data.aug_seed=0",
)


def one_epoch(
    root: str,
    pair: tuple[str, str],
    method: str,
    teacher: Path | None,
    out: Path,
    cache: Path | None,
    *extra: str,
) -> float:
    """Wall seconds of one training epoch of ``method`` on ``pair`` (validation and teacher scoring off); no
    ``teacher``: the student alone (``distill=ce``)."""
    model = ["model.teacher=null"] if teacher is None else [f"model.teacher.checkpoint={teacher}"]
    overrides = [
        "model=cifar100_pair",
        f"model.teacher.name={pair[0]}",
        f"model.student.name={pair[1]}",
        *model,
        f"distill={method}",
        f"data.root={root}",
        *DATA,
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "+trainer.limit_val_batches=0",
        "module.teacher_options.measure=false",
        "callbacks.progress_bar=null",
        "logger=none",
        f"module.teacher_options.cache={cache}" if cache else "module.teacher_options.cache=null",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.print_config = False
    start = time.perf_counter()
    fit(cfg)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data", help="folder holding cifar-100-python")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--pairs", nargs="+", default=[f"{t}:{s}" for t, s in PAIRS], help="teacher:student")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    work = Path(tempfile.mkdtemp(prefix="teacher_cache_"))
    try:
        # read once for every line; its runs set trainer.accelerator=cpu
        origin = {"code": code_version(), "machine": machine_of("cpu")}
        for pair in (tuple(p.split(":")) for p in args.pairs):
            teacher = work / f"{pair[0]}.pth"
            torch.manual_seed(0)
            torch.save({"model": create_model(pair[0], num_classes=20).state_dict()}, teacher)
            # what every run pays besides its epoch (composing, building, Lightning's start): a one-step run
            one_step = "+trainer.limit_train_batches=1"
            startup = one_epoch(args.root, pair, "ce", None, work / "startup", None, one_step)
            floor = (
                one_epoch(args.root, pair, "ce", None, work / "floor", None) - startup
            )  # the student alone
            for method in args.methods:
                cache = work / f"cache_{pair[0]}_{method}"
                live = one_epoch(args.root, pair, method, teacher, work / "live", None) - startup
                fill = one_epoch(args.root, pair, method, teacher, work / "fill", cache) - startup
                cached = one_epoch(args.root, pair, method, teacher, work / "cached", cache) - startup
                saved = live - cached
                students = 15  # 5 methods x 3 seeds
                print(
                    json.dumps(
                        {
                            "pair": f"{pair[0]}->{pair[1]}",
                            "method": method,
                            "startup_s": round(startup, 1),
                            "student_alone_s": round(floor, 1),
                            "live_s": round(live, 1),
                            "fill_s": round(fill, 1),
                            "cached_s": round(cached, 1),
                            "live_over_cached": round(live / cached, 2),
                            "fill_over_live": round(fill / live, 2),
                            "break_even_students": round(1 + (fill - live) / saved, 2) if saved > 0 else None,
                            "sweep_5x3_speedup": round(students * live / (fill + (students - 1) * cached), 2),
                            "cache_mib": round(sum(f.stat().st_size for f in cache.iterdir()) / 2**20, 1),
                            # one run of each, in this order: the sweep figure is extrapolated from them
                            **origin,
                        }
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

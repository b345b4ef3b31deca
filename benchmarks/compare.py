"""Side-by-side CIFAR-100 comparison: a teacher, then from-scratch, KD, DKD and PCKD students.

Every student run uses the same data, schedule and seeds; only ``distill`` changes. Runs that already
finished (a ``summary.json`` in their folder) are skipped, so an interrupted comparison resumes. At the
end the report tool writes the paper-style table (mean ± std over seeds, best and last top-1) and the
validation curves into ``<out>/report``.

    python benchmarks/compare.py --profile cpu --root ../shared/data --out outputs/compare_cpu
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from pckd_lightning.report.cli import build_report
from pckd_lightning.runner import fit

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Profile:
    """What to train: one or more pairs, the methods, seeds, schedule and data overrides."""

    pairs: tuple[tuple[str, str], ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_epochs: int
    student_epochs: int
    data: str = "cifar100"  # conf/data/<data>.yaml
    overrides: tuple[str, ...] = ()  # for every run (data subset, trainer, schedule)
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)


PROFILES = {
    # a few steps on a handful of images: keeps the harness itself tested
    "tiny": Profile(
        pairs=(("resnet14", "resnet8"),),
        methods=("ce", "kd", "dkd", "pckd"),
        seeds=(0, 1),
        teacher_epochs=1,
        student_epochs=1,
        overrides=(
            "data.train_per_class=2",
            "data.val_per_class=1",
            "data.num_workers=0",
            "+trainer.limit_train_batches=2",
            "scheduler=cosine",
        ),
        method_overrides={"dkd": ("distill.terms.dkd.warmup_epochs=1",)},
    ),
    # 2 CPU cores, at most 45 minutes: the first 20 classes (150 train / 50 val images each), a short
    # cosine schedule, resnet20 -> resnet8, three seeds
    "cpu": Profile(
        pairs=(("resnet20", "resnet8"),),
        methods=("ce", "kd", "dkd", "pckd"),
        seeds=(0, 1, 2),
        teacher_epochs=30,
        student_epochs=20,
        overrides=(
            "data.class_subset=20",
            "data.train_per_class=150",
            "data.val_per_class=50",
            "data.num_workers=1",
            "scheduler=cosine",
            "trainer.accelerator=cpu",
            "callbacks.progress_bar=null",
        ),
        method_overrides={"dkd": ("distill.terms.dkd.warmup_epochs=4",)},
    ),
    # full CIFAR-100 on one GPU with the device-resident data path, bf16 and channels_last
    "gpu-short": Profile(
        pairs=(("resnet32x4", "resnet8x4"),),
        methods=("ce", "kd", "dkd", "pckd"),
        seeds=(0,),
        teacher_epochs=30,
        student_epochs=30,
        data="cifar100_gpu",
        overrides=(
            "data.batch_size=256",
            "optimizer.lr=0.1",
            "scheduler=cosine",
            "trainer.precision=bf16-mixed",
            "performance.channels_last=true",
            "callbacks.progress_bar=null",
        ),
        method_overrides={"dkd": ("distill.terms.dkd.warmup_epochs=5",)},
    ),
    # the published recipe (240 epochs) for the seven published pairs
    "paper": Profile(
        pairs=(
            ("wrn_40_2", "wrn_16_2"),
            ("wrn_40_2", "wrn_40_1"),
            ("resnet56", "resnet20"),
            ("resnet110", "resnet20"),
            ("resnet110", "resnet32"),
            ("resnet32x4", "resnet8x4"),
            ("vgg13", "vgg8"),
        ),
        methods=("ce", "kd", "dkd", "pckd_wo_kd", "pckd"),
        seeds=(0, 1, 2),
        teacher_epochs=240,
        student_epochs=240,
    ),
}


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_once(name: str, overrides: list[str], output_dir: Path) -> None:
    """Train one job unless it already finished."""
    if (output_dir / "summary.json").is_file():
        print(f"[compare] {name}: done before, skipped ({output_dir})", flush=True)
        return
    start = time.perf_counter()
    summary = fit(compose_run(overrides, output_dir))
    print(
        f"[compare] {name}: best {summary['best_top1']:.2f}%, last {summary['last_top1']:.2f}% "
        f"in {time.perf_counter() - start:.0f} s",
        flush=True,
    )


def pair_config(teacher: str, student: str) -> list[str]:
    """The published pair's config where there is one (it carries per-pair settings), else the generic one."""
    if (CONF_DIR / "model" / "cifar100" / f"{teacher}_{student}.yaml").is_file():
        return [f"model=cifar100/{teacher}_{student}"]
    return ["model=cifar100/pair", f"model.teacher.name={teacher}", f"model.student.name={student}"]


def teacher_path(out: Path, arch: str, teacher_dir: Path | None) -> Path:
    if teacher_dir is not None:
        return teacher_dir / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    return out / "teachers" / arch / "student.pth"


def compare(profile: Profile, root: str, out: Path, teacher_dir: Path | None = None) -> str:
    """Train everything the profile lists (skipping finished runs) and return the report's markdown."""
    common = [f"data={profile.data}", f"data.root={root}", *profile.overrides]
    for teacher, student in profile.pairs:
        weights = teacher_path(out, teacher, teacher_dir)
        if teacher_dir is None:
            run_once(
                f"teacher {teacher}",
                [
                    "model=cifar100/scratch",
                    f"model.student.name={teacher}",
                    "distill=ce",
                    *common,
                    f"trainer.max_epochs={profile.teacher_epochs}",
                    "seed=0",
                ],
                weights.parent,
            )
        for method in profile.methods:
            for seed in profile.seeds:
                if method == "ce":  # the from-scratch student row
                    model = ["model=cifar100/scratch", f"model.student.name={student}"]
                else:
                    model = [*pair_config(teacher, student), f"model.teacher.checkpoint={weights}"]
                run_once(
                    f"{teacher}->{student} {method} seed {seed}",
                    [
                        *model,
                        f"distill={method}",
                        *common,
                        *profile.method_overrides.get(method, ()),
                        f"trainer.max_epochs={profile.student_epochs}",
                        f"seed={seed}",
                    ],
                    out / f"{teacher}_{student}" / method / f"seed{seed}",
                )
    _, markdown = build_report(out, out / "report")
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--root", default="../shared/data", help="folder holding cifar-100-python")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/compare_<profile>")
    parser.add_argument(
        "--teacher-dir", type=Path, default=None, help="published teachers (<arch>_vanilla/...)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    out = args.out or Path("outputs") / f"compare_{args.profile}"
    start = time.perf_counter()
    markdown = compare(PROFILES[args.profile], args.root, out, args.teacher_dir)
    print(markdown)
    print(
        f"[compare] profile {args.profile}: {time.perf_counter() - start:.0f} s in all; report in {out / 'report'}"
    )


if __name__ == "__main__":
    main()

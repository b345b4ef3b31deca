"""Side-by-side CIFAR-100 comparison: a teacher, then from-scratch, KD, DKD and PCKD students (or, with
``--profile ablation``, PCKD with one part removed or changed per row).

Every student run uses the same data, schedule and seeds; only ``distill`` changes. Runs that already
finished (a complete ``summary.json`` in their folder) are skipped, and a run that was stopped (SIGTERM,
Ctrl-C) or killed continues from its last checkpoint, so an interrupted comparison resumes where it was. At the
end the report tool writes the paper-style table (mean ± std over seeds, best and last top-1) and the
validation curves into ``<out>/report``.

    python benchmarks/compare.py --profile cpu --root ../shared/data --out outputs/compare_cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from pckd_lightning.errors import ConfigError
from pckd_lightning.report.cli import build_report
from pckd_lightning.resume import changed_keys, recorded_changes
from pckd_lightning.run import fit
from pckd_lightning.run_folder import read_run_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Variant:
    """A report row that is a method with some overrides (an ablation), not a plain ``conf/distill`` method."""

    method: str  # conf/distill/<method>.yaml
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """What to train: one or more pairs, the rows, seeds, schedule and data overrides.

    ``methods`` names the rows: a ``conf/distill`` method, or a key of ``variants``. A variant's runs are
    recorded under the row's name (``distill.name``), which is the row the report shows. ``method_overrides``
    apply to every row of that method (e.g. a warm-up shortened to the profile's schedule); a callable one
    takes the student run's length in epochs. ``student_epochs`` is one length, or several (a schedule
    study: every row and seed at each length, shortest first, in ``<row>/e<epochs>/seed<seed>``).
    """

    pairs: tuple[tuple[str, str], ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_epochs: int
    student_epochs: int | tuple[int, ...]
    data: str = "cifar100"  # conf/data/<data>.yaml
    overrides: tuple[str, ...] = ()  # for every run (data subset, trainer, schedule)
    method_overrides: dict[str, tuple[str, ...] | Callable[[int], tuple[str, ...]]] = field(
        default_factory=dict
    )
    variants: dict[str, Variant] = field(default_factory=dict)

    @property
    def lengths(self) -> tuple[int, ...]:
        """The student runs' lengths in epochs."""
        epochs = self.student_epochs
        return tuple(sorted(epochs)) if isinstance(epochs, tuple) else (epochs,)

    def row(self, name: str, epochs: int) -> tuple[str, list[str]]:
        """The distill method of row ``name`` and the overrides that make it that row at ``epochs``."""
        variant = self.variants.get(name, Variant(name))
        named = [f"distill.name={name}"] if name != variant.method else []
        method_overrides = self.method_overrides.get(variant.method, ())
        if callable(method_overrides):
            method_overrides = method_overrides(epochs)
        return variant.method, [*method_overrides, *variant.overrides, *named]

    def run_folder(self, out: Path, pair: tuple[str, str], row: str, epochs: int, seed: int) -> Path:
        """Where one student run lives (a single-length profile keeps the ``<row>/seed<seed>`` layout)."""
        folder = out / f"{pair[0]}_{pair[1]}" / row
        if isinstance(self.student_epochs, tuple):
            folder = folder / f"e{epochs}"
        return folder / f"seed{seed}"


#: linear warm-up of FA and CC in the ablation, in epochs of its 20. The rule, fixed before the ablation ran:
#: W = ceil(FA / (4 · CE)) from grad/<term>/norm at PCKD's first measurement (step 0), which brings FA under
#: 4 times CE in epoch 1 and leaves the last three quarters of the schedule at the published weights. The
#: ablation's own pckd rows (mean of seeds 0-2, step 0): FA 16.7, CE 0.915, so W = ceil(4.55) = 5, as the
#: issue's single cpu-profile run gave (FA 16.8, CE 0.89: ceil(4.7) = 5). docs/results.md has the curves.
FA_CC_WARMUP_EPOCHS = 5
#: the ablation's rows: scratch, KD (0.1/0.9), CE·1 + KD·1, PCKD and PCKD without or with one change each
ABLATION_ROWS = (
    "ce",
    "kd",
    "ce1_kd1",
    "pckd",
    "pckd_wo_preview",
    "pckd_wo_fa",
    "pckd_wo_cc",
    "pckd_wo_ca",
    "pckd_one_view",
    "pckd_fa_cc_warmup",
    "pckd_progress",
)
GRADIENT_SHARE = "callbacks.gradient_share.every_n_steps=50"
ABLATION_VARIANTS = {
    "ce1_kd1": Variant("kd", ("distill.terms.ce.weight=1.0", "distill.terms.kd.weight=1.0")),
    "pckd": Variant("pckd", (GRADIENT_SHARE,)),
    "pckd_wo_preview": Variant(
        "pckd",
        (
            "distill.preview=null",
            "distill.terms.kd.preview=false",
            "distill.terms.category_contrast.preview=false",
        ),
    ),
    "pckd_wo_fa": Variant("pckd", ("distill.terms.feature_align=null",)),
    "pckd_wo_cc": Variant("pckd", ("distill.terms.category_contrast=null",)),
    "pckd_wo_ca": Variant("pckd", ("distill.terms.center_align=null",)),
    "pckd_one_view": Variant("pckd", ("distill.views=1",)),
    "pckd_fa_cc_warmup": Variant(
        "pckd",
        (
            f"++distill.terms.feature_align.warmup_epochs={FA_CC_WARMUP_EPOCHS}",
            f"++distill.terms.category_contrast.warmup_epochs={FA_CC_WARMUP_EPOCHS}",
            GRADIENT_SHARE,
        ),
    ),
    "pckd_progress": Variant(
        "pckd", ("++distill.preview.schedule=progress", "++distill.preview.reference_epochs=240")
    ),
}
TINY_DATA = (
    "data.train_per_class=2",
    "data.val_per_class=1",
    "data.num_workers=0",
    "+trainer.limit_train_batches=2",
)
TINY_OVERRIDES = (*TINY_DATA, "scheduler=cosine")
CPU_DATA = (
    "data.class_subset=20",
    "data.train_per_class=150",
    "data.val_per_class=50",
    "data.split_seed=0",  # the same images in every run, whatever its seed
    "data.num_workers=1",
)
CPU_OVERRIDES = (
    *CPU_DATA,
    "scheduler=cosine",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
)


def dkd_warmup_scaled(epochs: int) -> tuple[str, ...]:
    """DKD's published warm-up (20 of 240 epochs) scaled to a run of ``epochs``, rounded up."""
    return (f"distill.terms.dkd.warmup_epochs={math.ceil(20 * epochs / 240)}",)


PROFILES = {
    # a few steps on a handful of images: keeps the harness itself tested
    "tiny": Profile(
        pairs=(("resnet14", "resnet8"),),
        methods=("ce", "kd", "dkd", "pckd"),
        seeds=(0, 1),
        teacher_epochs=1,
        student_epochs=1,
        overrides=TINY_OVERRIDES,
        method_overrides={"dkd": ("distill.terms.dkd.warmup_epochs=1",)},
    ),
    # the ablation's rows on the tiny profile's data: keeps the composition of every row tested
    "tiny-ablation": Profile(
        pairs=(("resnet14", "resnet8"),),
        methods=ABLATION_ROWS,
        seeds=(0, 1),
        teacher_epochs=1,
        student_epochs=1,
        overrides=TINY_OVERRIDES,
        variants=ABLATION_VARIANTS,
    ),
    # 2 CPU cores: the first 20 classes (150 train / 50 val images each), a short cosine schedule,
    # resnet20 -> resnet8, three seeds (the first four rows took 28 minutes; eight rows about an hour)
    "cpu": Profile(
        pairs=(("resnet20", "resnet8"),),
        # the 2022-2024 logit methods beside the CRD-benchmark rows (their published weights)
        methods=("ce", "kd", "dkd", "pckd", "kd_ls", "dkd_ls", "dist", "mlkd"),
        seeds=(0, 1, 2),
        teacher_epochs=30,
        student_epochs=20,
        overrides=CPU_OVERRIDES,
        # DKD's 20-epoch warm-up scaled to the 20-epoch schedule, as for dkd
        method_overrides={
            "dkd": ("distill.terms.dkd.warmup_epochs=4",),
            "dkd_ls": ("distill.terms.dkd.warmup_epochs=4",),
        },
    ),
    # what PCKD's terms add on the cpu profile's data, pair and schedule: 11 rows x 3 seeds (33 student runs;
    # on 2 cores 1-2 min per one-view run, 4-6 min per four-view PCKD run, about 2.5 h in all); the report
    # pairs each row with KD seed by seed
    "ablation": Profile(
        pairs=(("resnet20", "resnet8"),),
        methods=ABLATION_ROWS,
        seeds=(0, 1, 2),
        teacher_epochs=30,
        student_epochs=20,
        overrides=CPU_OVERRIDES,
        variants=ABLATION_VARIANTS,
    ),
    # does PCKD's deficit shrink as the schedule grows toward the paper's? The cpu profile's data and pair with
    # the published step schedule scaled to each length (x0.1 at 62.5/75/87.5 %) and a teacher trained as
    # long as the longest student run. Rows at their published defaults (pckd_warmup as shipped: 5 epochs);
    # DKD's warm-up: its 20 of 240 epochs scaled (2, 5, 10; the cpu profile's DKD uses 4 of 20). Measured on
    # this 2-core machine, two one-thread processes side by side (OMP_NUM_THREADS=1, --seeds/--rows splitting
    # the work): the teacher 30-35 s/epoch (70 min); students about 22 s/epoch from scratch, 35-40 s/epoch KD
    # or DKD, 100-130 s/epoch four-view PCKD (up to 180 with the test suite sharing the cores), so
    # per seed about 1.7 h at 20 epochs, 5 h at 60 and 10 h at 120 of one core (an earlier estimate of
    # 17/50/100 min was 6x short). Runs go shortest length first, seed by seed: partial results are whole rows.
    "schedule": Profile(
        pairs=(("resnet20", "resnet8"),),
        methods=("ce", "kd", "pckd", "pckd_warmup", "dkd"),
        seeds=(0, 1, 2),
        teacher_epochs=120,
        student_epochs=(20, 60, 120),
        overrides=(
            *CPU_DATA,
            "scheduler=multistep_scaled",
            "trainer.accelerator=cpu",
            "callbacks.progress_bar=null",
        ),
        method_overrides={"dkd": dkd_warmup_scaled},
    ),
    # the schedule study's harness on the tiny profile's data: two lengths, the scaled step schedule
    "tiny-schedule": Profile(
        pairs=(("resnet14", "resnet8"),),
        methods=("ce", "kd", "pckd_warmup", "dkd"),
        seeds=(0, 1),
        teacher_epochs=2,
        student_epochs=(1, 2),
        overrides=(*TINY_DATA, "scheduler=multistep_scaled"),
        method_overrides={"dkd": dkd_warmup_scaled},
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
            "module.performance.channels_last=true",
            "callbacks.progress_bar=null",
        ),
        method_overrides={"dkd": ("distill.terms.dkd.warmup_epochs=5",)},
    ),
    # one published row on one GPU (benchmarks/packed_runs.py row packs its students; gpu_suite.sh runs it):
    # resnet56 -> resnet20, the teacher then KD, DKD, PCKD w/o L_KD and PCKD, published recipe (240 epochs,
    # batch 64, lr 0.05, x0.1 at 150/180/210). Published: teacher 72.34, KD 70.66, DKD 71.97,
    # PCKD w/o L_KD 71.92, PCKD 72.21
    "paper-row": Profile(
        pairs=(("resnet56", "resnet20"),),
        methods=("kd", "dkd", "pckd_wo_kd", "pckd"),
        seeds=(0,),
        teacher_epochs=240,
        student_epochs=240,
        data="cifar100_gpu",
        overrides=("callbacks.progress_bar=null",),
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


def resume_point(output_dir: Path) -> Path | bool | None:
    """False when the run in ``output_dir`` finished; else the checkpoint to continue it from (None: start)."""
    summary = output_dir / "summary.json"
    if summary.is_file():
        written = json.loads(summary.read_text())
        if written.get("status", "complete") == "complete":
            return False
        checkpoint = written.get("resume_checkpoint")  # an interrupted run names it
        return Path(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    last = output_dir / "checkpoints" / "last.ckpt"  # a killed run leaves no summary
    return last if last.is_file() else None


def check_finished_run(output_dir: Path, cfg: DictConfig) -> None:
    """Refuse a finished run in ``output_dir`` that trained other settings than this job's (another length,
    lr, schedule ...): skipping it would report the old run as this one."""
    saved = read_run_config(output_dir / "config.yaml")
    current = OmegaConf.to_container(cfg, resolve=True)
    if saved is None:
        raise ConfigError(f"{output_dir} holds a finished run without a readable config.yaml: move it away")
    changes = changed_keys(saved, current) | recorded_changes(saved, current)
    epochs = (saved.get("trainer") or {}).get("max_epochs"), cfg.trainer.max_epochs
    if epochs[0] != epochs[1]:
        changes["trainer.max_epochs"] = {"checkpoint": epochs[0], "run": epochs[1]}
    if changes:
        listed = ", ".join(f"{k}: {c['checkpoint']!r} -> {c['run']!r}" for k, c in sorted(changes.items()))
        raise ConfigError(
            f"{output_dir} holds a finished run of other settings than this job's ({listed}); skipping it would "
            "report it as this job. Use another --out, or move the folder away to train this job"
        )


def run_once(name: str, overrides: list[str], output_dir: Path) -> None:
    """Train one job unless it already finished with its settings; a stopped or killed one continues from its
    last epoch."""
    checkpoint = resume_point(output_dir)
    if checkpoint is False:
        check_finished_run(output_dir, compose_run(overrides, output_dir))
        print(f"[compare] {name}: done before, skipped ({output_dir})", flush=True)
        return
    if checkpoint is not None:
        print(f"[compare] {name}: resuming from {checkpoint}", flush=True)
        overrides = [*overrides, f"ckpt_path={checkpoint}"]
    start = time.perf_counter()
    summary = fit(compose_run(overrides, output_dir))
    print(
        f"[compare] {name}: best {summary['best_top1']:.2f}%, last {summary['last_top1']:.2f}% "
        f"in {time.perf_counter() - start:.0f} s",
        flush=True,
    )


def pair_config(teacher: str, student: str) -> list[str]:
    """The published pair's config where there is one (it carries per-pair settings), else the generic one."""
    if (CONF_DIR / "model" / f"cifar100_{teacher}_{student}.yaml").is_file():
        return [f"model=cifar100_{teacher}_{student}"]
    return ["model=cifar100_pair", f"model.teacher.name={teacher}", f"model.student.name={student}"]


def teacher_path(out: Path, arch: str, teacher_dir: Path | None) -> Path:
    if teacher_dir is not None:
        return teacher_dir / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    return out / "teachers" / arch / "student.pth"


def student_run(
    profile: Profile, row: str, root: str, pair: tuple[str, str], weights: Path, seed: int, epochs: int
) -> list[str]:
    """The overrides of one student run of ``row``: model, method, the profile's and the row's overrides."""
    teacher, student = pair
    method, row_overrides = profile.row(row, epochs)
    if method == "ce":  # the from-scratch student row
        model = ["model=cifar100_scratch", f"model.student.name={student}"]
    else:
        model = [*pair_config(teacher, student), f"model.teacher.checkpoint={weights}"]
    return [
        *model,
        f"distill={method}",
        f"data={profile.data}",
        f"data.root={root}",
        *profile.overrides,
        *row_overrides,
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
    ]


def train_teacher(profile: Profile, root: str, arch: str, weights: Path) -> None:
    """The profile's teacher ``arch`` from scratch (seed 0), into the folder of ``weights``."""
    run_once(
        f"teacher {arch}",
        [
            "model=cifar100_scratch",
            f"model.student.name={arch}",
            "distill=ce",
            f"data={profile.data}",
            f"data.root={root}",
            *profile.overrides,
            f"trainer.max_epochs={profile.teacher_epochs}",
            "seed=0",
        ],
        weights.parent,
    )


def compare(profile: Profile, root: str, out: Path, teacher_dir: Path | None = None) -> str:
    """Train everything the profile lists (skipping finished runs) and return the report's markdown."""
    methods = {profile.variants.get(name, Variant(name)).method for name in profile.methods}
    for teacher, student in profile.pairs:
        weights = teacher_path(out, teacher, teacher_dir)
        # a from-scratch-only selection needs no teacher; an empty one is the teacher alone (packed_runs.py)
        if teacher_dir is None and methods != {"ce"}:
            train_teacher(profile, root, teacher, weights)
        for epochs in profile.lengths:  # shortest first, seed by seed: what finished is whole rows
            for seed in profile.seeds:
                for name in profile.methods:
                    run_once(
                        f"{teacher}->{student} {name} {epochs} epochs seed {seed}",
                        student_run(profile, name, root, (teacher, student), weights, seed, epochs),
                        profile.run_folder(out, (teacher, student), name, epochs, seed),
                    )
    _, markdown = build_report(out, out / "report")
    return markdown


def select(
    profile: Profile, seeds: list[int] | None, lengths: list[int] | None, rows: list[str] | None
) -> Profile:
    """The part of ``profile`` one process runs, so two processes can share a study (same output folder)."""
    chosen = {
        "seeds": (seeds, profile.seeds),
        "lengths": (lengths, profile.lengths),
        "rows": (rows, profile.methods),
    }
    for what, (asked, offered) in chosen.items():
        unknown = sorted(set(asked or ()) - set(offered))
        if unknown:
            raise SystemExit(
                f"--{what} {' '.join(map(str, unknown))}: not in this profile; choose from {list(offered)}"
            )
    changes: dict[str, object] = {}
    if seeds:
        changes["seeds"] = tuple(s for s in profile.seeds if s in seeds)
    if lengths:
        kept = tuple(n for n in profile.lengths if n in lengths)
        changes["student_epochs"] = kept if isinstance(profile.student_epochs, tuple) else kept[0]
    if rows:
        changes["methods"] = tuple(r for r in profile.methods if r in rows)
    return replace(profile, **changes)


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
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the profile's seeds")
    parser.add_argument("--lengths", type=int, nargs="+", help="only these of the profile's lengths")
    parser.add_argument("--rows", nargs="+", help="only these of the profile's rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    out = args.out or Path("outputs") / f"compare_{args.profile}"
    start = time.perf_counter()
    profile = select(PROFILES[args.profile], args.seeds, args.lengths, args.rows)
    markdown = compare(profile, args.root, out, args.teacher_dir)
    print(markdown)
    print(
        f"[compare] profile {args.profile}: {time.perf_counter() - start:.0f} s in all; report in {out / 'report'}"
    )


if __name__ == "__main__":
    main()

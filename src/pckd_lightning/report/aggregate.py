"""Mean ± sample standard deviation over seeds, arranged as the paper's table.

Columns are teacher → student pairs (per data set); rows are

* ``teacher``: the teachers' top-1 (``teacher_top1`` of the pair's distillation runs), one value per
  distinct teacher checkpoint, so nine runs distilled from one teacher count once, not nine times;
* ``student (scratch)``: runs of method ``ce`` whose student is the pair's student on the same data set;
* one row per distillation method (summary ``method``). When runs of one method were trained with different
  ``distill`` settings (an ablation such as ``distill.terms.feature_align=null`` or another weight or
  temperature) or another ``trainer.max_epochs``, each setting gets its own row, labelled by how it
  differs from the method's most common setting. Other differences (learning rate, ...) are not told
  apart. From-scratch runs are matched by student and data set only.

The statistic is the mean and the *sample* standard deviation (``ddof=1``, :func:`statistics.stdev`) over
seeds; with a single seed the standard deviation is undefined and stays ``None`` (shown as ``n/a``).
"Δ vs KD" is ``mean(method) - mean(kd)`` for the same pair and metric, in percentage points. The paired
Δ is taken seed by seed, ``method(seed) - kd(seed)`` over the seeds both rows have (same seed: same
initialization and data order), with its mean and sample standard deviation: the seed-to-seed noise
that both rows share cancels, so it tells a small gain from noise where the unpaired Δ cannot. Both are
given only where the row and KD trained for the same number of epochs.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pckd_lightning.report.collect import SCRATCH_METHOD, RunRecord, settings_key

METRICS = {"best": "best_top1", "last": "last_top1"}
TEACHER_ROW = "teacher"
SCRATCH_ROW = "student (scratch)"
KD_ROW = "kd"


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; None for n < 2) of ``values``."""

    values: tuple[float, ...]
    seeds: tuple = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None


@dataclass(frozen=True, order=True)
class Pair:
    dataset: str
    teacher: str
    student: str

    def label(self, with_dataset: bool = False) -> str:
        text = f"{self.teacher} → {self.student}"
        return f"{text} ({self.dataset})" if with_dataset else text


@dataclass
class Report:
    """Everything the renderers need."""

    pairs: list[Pair]
    rows: list[str]  # distillation method rows, in display order
    #: (row, pair, metric) -> Stat, for method rows and SCRATCH_ROW; metric in METRICS
    cells: dict[tuple[str, Pair, str], Stat]
    teacher: dict[Pair, Stat]
    #: (row, pair, metric) -> mean(row) - mean(kd)
    delta: dict[tuple[str, Pair, str], float]
    #: (row, pair, metric) -> the per-seed differences row - kd over their common seeds (SCRATCH_ROW included)
    paired: dict[tuple[str, Pair, str], Stat]
    #: from-scratch runs whose architecture is no pair's student (e.g. teachers being trained):
    #: (dataset, arch, metric) -> Stat
    other_scratch: dict[tuple[str, str, str], Stat]
    #: (row, pair) -> {epoch: mean val top-1 over the seeds that logged that epoch}
    curves: dict[tuple[str, Pair], dict[int, float]]
    records: list[RunRecord] = field(default_factory=list)
    #: (row, pair) -> {grad/<term>/<value>: {step: mean over the seeds that logged it}} (GradientShare)
    gradients: dict[tuple[str, Pair], dict[str, dict[int, float]]] = field(default_factory=dict)

    @property
    def multiple_datasets(self) -> bool:
        return len({p.dataset for p in self.pairs}) > 1

    @property
    def typical_n(self) -> int:
        """The most common number of seeds per cell (cells with another n are marked)."""
        counts = Counter(s.n for s in self.cells.values())
        return counts.most_common(1)[0][0] if counts else 0


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _term_names(settings: dict[str, Any]) -> set[str]:
    return {k.split(".")[1] for k in settings if k.startswith("terms.")}


def variant_label(method: str, settings: dict[str, Any], reference: dict[str, Any]) -> str:
    """``method`` plus how ``settings`` differ from ``reference``.

    E.g. ``pckd (without feature_align)``, ``pckd (category_contrast.weight=0.1)``, ``kd (+at)``.
    """
    own, ref = _term_names(settings), _term_names(reference)
    changes = [f"without {t}" for t in sorted(ref - own)] + [f"+{t}" for t in sorted(own - ref)]
    for key in sorted(set(settings) | set(reference)):
        if key.startswith("terms.") and key.split(".")[1] not in own & ref:
            continue  # a whole term added or removed: said above
        if settings.get(key) != reference.get(key):
            changes.append(f"{key.removeprefix('terms.')}={_fmt(settings.get(key))}")
    return f"{method} ({', '.join(changes)})" if changes else method


def label_variants(records: Iterable[RunRecord]) -> None:
    """Set ``record.label``: the method, qualified when its runs used different distillation settings.

    The reference (the plain method name) is the most common setting among the method's runs on the same
    pair; ties go to the setting that sorts first. Per pair, so that per-pair published settings (DKD's β,
    lr 0.01 for MobileNet/ShuffleNet students) stay the method's row instead of a variant of it.
    """
    by_method: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        by_method[(str(record.method), record.dataset, record.teacher, record.student)].append(record)
    for (method, *_), group in by_method.items():
        signatures = Counter(settings_key(r.settings) for r in group)
        reference_key = min(signatures, key=lambda s: (-signatures[s], s))
        reference = next(r.settings for r in group if settings_key(r.settings) == reference_key)
        for record in group:
            record.label = variant_label(method, record.settings, reference)


def _row_order(label: str) -> tuple:
    """KD first (the baseline Δ refers to), the flagship PCKD (and its variants) last, others by name."""
    base = label.split(" (", 1)[0]
    return (0 if base == KD_ROW else 2 if base.startswith("pckd") else 1, base, label)


def _stat(records: list[RunRecord], attr: str) -> Stat | None:
    chosen = [r for r in records if getattr(r, attr) is not None]
    if not chosen:
        return None
    return Stat(tuple(float(getattr(r, attr)) for r in chosen), tuple(r.seed for r in chosen))


def _mean_curve(records: list[RunRecord]) -> dict[int, float]:
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for record in records:
        for epoch, value in record.curve.items():
            per_epoch[epoch].append(value)
    return {e: statistics.fmean(v) for e, v in sorted(per_epoch.items())}


def _mean_gradients(records: list[RunRecord]) -> dict[str, dict[int, float]]:
    per_step: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for key, series in record.gradients.items():
            for step, value in series.items():
                per_step[key][step].append(value)
    return {
        key: {step: statistics.fmean(v) for step, v in sorted(steps.items())}
        for key, steps in sorted(per_step.items())
    }


def aggregate(records: list[RunRecord]) -> Report:
    """Group the complete runs of ``records`` into the table; other records are only carried along."""
    complete = [r for r in records if r.complete]
    label_variants(complete)
    distilled = [r for r in complete if not r.is_scratch]
    scratch = [r for r in complete if r.is_scratch]

    groups: dict[tuple[str, Pair], list[RunRecord]] = defaultdict(list)
    for r in distilled:
        pair = Pair(r.dataset, str(r.teacher or "—"), str(r.student))
        groups[(str(r.label), pair)].append(r)
    pairs = sorted({pair for _, pair in groups})
    rows = sorted({label for label, _ in groups}, key=_row_order)

    cells: dict[tuple[str, Pair, str], Stat] = {}
    curves: dict[tuple[str, Pair], dict[int, float]] = {}
    gradients: dict[tuple[str, Pair], dict[str, dict[int, float]]] = {}
    #: the schedules (trainer.max_epochs) of each cell's runs: Δ compares rows of one schedule only
    schedules: dict[tuple[str, Pair], frozenset] = {}
    for (label, pair), group in groups.items():
        schedules[(label, pair)] = frozenset(r.max_epochs for r in group)
        for metric, attr in METRICS.items():
            if (stat := _stat(group, attr)) is not None:
                cells[(label, pair, metric)] = stat
        curves[(label, pair)] = _mean_curve(group)
        if any(r.gradients for r in group):
            gradients[(label, pair)] = _mean_gradients(group)

    matched: set[int] = set()
    for pair in pairs:
        # the scratch runs of the most common setting (label "ce"); the others are listed apart, by label
        group = [
            r
            for r in scratch
            if r.student == pair.student and r.dataset == pair.dataset and r.label == SCRATCH_METHOD
        ]
        matched.update(id(r) for r in group)
        if not group:
            continue
        schedules[(SCRATCH_ROW, pair)] = frozenset(r.max_epochs for r in group)
        for metric, attr in METRICS.items():
            if (stat := _stat(group, attr)) is not None:
                cells[(SCRATCH_ROW, pair, metric)] = stat
        curves[(SCRATCH_ROW, pair)] = _mean_curve(group)

    teacher: dict[Pair, Stat] = {}
    for pair in pairs:
        per_checkpoint: dict[str, list[float]] = defaultdict(list)
        for (_, p), group in groups.items():
            if p != pair:
                continue
            for r in group:
                if r.teacher_top1 is not None and math.isfinite(r.teacher_top1):
                    key = r.teacher_checkpoint or str(r.run_dir)
                    per_checkpoint[key].append(r.teacher_top1)
        if per_checkpoint:
            teacher[pair] = Stat(
                tuple(statistics.fmean(v) for _, v in sorted(per_checkpoint.items())),
                tuple(sorted(per_checkpoint)),
            )

    def same_schedule(label: str, pair: Pair) -> bool:
        """A row and KD trained for the same number of epochs (a 10- and a 240-epoch Δ says nothing)."""
        own, kd = schedules.get((label, pair)), schedules.get((KD_ROW, pair))
        return own is not None and own == kd and len(own) == 1

    delta: dict[tuple[str, Pair, str], float] = {}
    for label in rows:
        if label == KD_ROW:
            continue
        for pair in pairs:
            for metric in METRICS:
                kd, own = cells.get((KD_ROW, pair, metric)), cells.get((label, pair, metric))
                if kd is not None and own is not None and same_schedule(label, pair):
                    delta[(label, pair, metric)] = own.mean - kd.mean

    other_groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in scratch:
        if id(r) not in matched:
            variant = str(r.label).removeprefix(SCRATCH_METHOD)  # "" or " (trainer.max_epochs=30)"
            other_groups[(r.dataset, f"{r.student}{variant}")].append(r)
    other_scratch = {
        (dataset, arch, metric): stat
        for (dataset, arch), group in sorted(other_groups.items())
        for metric, attr in METRICS.items()
        if (stat := _stat(group, attr)) is not None
    }
    paired = {
        (label, pair, metric): stat
        for label in [SCRATCH_ROW, *rows]
        if label != KD_ROW
        for pair in pairs
        for metric in METRICS
        if same_schedule(label, pair)
        and (stat := paired_difference(cells.get((label, pair, metric)), cells.get((KD_ROW, pair, metric))))
    }
    return Report(pairs, rows, cells, teacher, delta, paired, other_scratch, curves, records, gradients)


def paired_difference(own: Stat | None, kd: Stat | None) -> Stat | None:
    """``own(seed) - kd(seed)`` over the seeds both have, in seed order; None when they share none."""
    if own is None or kd is None:
        return None
    own_by_seed = {s: v for s, v in zip(own.seeds, own.values, strict=True) if s is not None}
    kd_by_seed = {s: v for s, v in zip(kd.seeds, kd.values, strict=True) if s is not None}
    common = sorted(set(own_by_seed) & set(kd_by_seed), key=lambda s: (isinstance(s, str), s))
    if not common:
        return None
    return Stat(tuple(own_by_seed[s] - kd_by_seed[s] for s in common), tuple(common))

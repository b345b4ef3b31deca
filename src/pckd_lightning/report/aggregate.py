"""Mean ± sample standard deviation over seeds, arranged as the paper's table, with Δ vs KD and its interval.

Columns are teacher → student pairs (per data set and teacher file: runs distilled from two different
teacher files of one architecture are two columns, never compared); rows are

* ``teacher``: the teachers' top-1 (``teacher_top1`` of the pair's distillation runs), one value per
  distinct teacher file, so nine runs distilled from one teacher count once, not nine times;
* ``student (scratch)``: runs of method ``ce`` whose student is the pair's student on the same data set,
  where they ran the experiment (optimizer, data, schedule) of the pair's KD runs;
* one row per distillation method (summary ``method``). Runs share a row only when they differ in nothing
  but the seed (:func:`~pckd_lightning.report.collect.row_key`); each other setting of a method gets a row
  of its own, labelled by how it differs from the method's most common setting, and a run resumed with
  changes is labelled so.

The statistic is the mean and the *sample* standard deviation (``ddof=1``, :func:`statistics.stdev`) over
seeds; with a single seed the standard deviation is undefined and stays ``None`` (shown as ``n/a``).
"Δ vs KD" is ``mean(method) - mean(kd)`` for the same pair and metric, in percentage points. The paired
Δ is taken seed by seed, ``method(seed) - kd(seed)`` over the seeds both rows have (same seed: same
initialization and data order), with its mean and sample standard deviation: the seed-to-seed noise
that both rows share cancels, so it tells a small gain from noise where the unpaired Δ cannot. Each Δ has
a 95 % confidence interval (:mod:`~pckd_lightning.report.stats`: paired t, or Welch's where the rows share
no seed) and, when paired, the seeds 80 % power would need. Δs are given only where the row and KD trained
for the same number of epochs.

When runs differ only in their length (``trainer.max_epochs`` and the settings that follow from it, such as
a scaled step schedule's milestones or a warm-up scaled with the run), :attr:`Report.schedule` holds the
same statistics per length.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from pckd_lightning.report.collect import (
    AUG_SEED,
    SCRATCH_METHOD,
    TEACHER,
    UNSET_LABELS,
    RunRecord,
    format_value,
    same,
    settings_key,
)
from pckd_lightning.report.stats import Interval, paired_interval, welch_interval
from pckd_lightning.resume import FIXED

METRICS = {"best": "best_top1", "last": "last_top1", "test": "test_top1", "test_top5": "test_top5"}
TEACHER_ROW = "teacher"
SCRATCH_ROW = "student (scratch)"
KD_ROW = "kd"
LENGTH_KEY = "trainer.max_epochs"
#: settings a config may derive from trainer.max_epochs (scheduler=multistep_scaled's milestones, a warm-up
#: scaled with the run, cosine's T_max); such a key follows the length where each length has one value of it
FOLLOWS_LENGTH = ("milestones", "warmup_epochs", "T_max")

#: the config groups whose settings make the experiment a method runs in: the resume's fixed ones but the
#: method's own (distill) and the seed
EXPERIMENT_GROUPS = tuple({k.split(".")[0]: None for k in FIXED if k not in ("distill", "seed")})
#: settings outside distill that follow the method: the views and their recipe (interpolated from distill),
#: the teacher and how it runs (a distilled run has one, a from-scratch run none) and the student's taps (a
#: method that reads features needs them, KD does not)
FOLLOWS_METHOD = (
    "data.views",
    "data.view_recipe",
    "model.teacher",
    "module.teacher_options",
    "model.student.taps",
)

Key = tuple[str, "Pair", str]  # (row, pair, metric)


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
    #: the teacher file's SHA-256 ("" where the runs did not record it)
    teacher_sha256: str = ""

    def label(self, with_dataset: bool = False, with_sha: bool = False) -> str:
        teacher = (
            f"{self.teacher} [{self.teacher_sha256[:8] or 'unknown file'}]" if with_sha else self.teacher
        )
        text = f"{teacher} → {self.student}"
        return f"{text} ({self.dataset})" if with_dataset else text


@dataclass(frozen=True)
class Teacher:
    """One teacher file, listed once: its accuracy as the runs distilled from it measured it, and the run
    that trained it where that run is below the folder."""

    arch: str
    dataset: str
    file: str | None
    sha256: str | None
    #: mean ``teacher_top1`` of the complete runs distilled from it (None when there is none)
    top1: float | None
    runs: int
    trained_in: RunRecord | None = None


@dataclass
class Comparison:
    """Rows against KD on each pair: Δ of the means, the paired Δ and the 95 % confidence interval."""

    #: (row, pair, metric) -> mean(row) - mean(kd)
    delta: dict[Key, float] = field(default_factory=dict)
    #: (row, pair, metric) -> the per-seed differences row - kd over their common seeds (SCRATCH_ROW included)
    paired: dict[Key, Stat] = field(default_factory=dict)
    #: (row, pair, metric) -> 95 % interval of the Δ: paired over the common seeds, Welch's without any
    intervals: dict[Key, Interval] = field(default_factory=dict)


@dataclass
class LengthTable:
    """One schedule length's rows: cells and their comparison with KD at the same length."""

    rows: list[str]  # SCRATCH_ROW first where present, then the method rows in display order
    cells: dict[Key, Stat]
    comparison: Comparison


@dataclass
class Report:
    """Everything the renderers need."""

    pairs: list[Pair]
    rows: list[str]  # distillation method rows, in display order
    #: (row, pair, metric) -> Stat, for method rows and SCRATCH_ROW; metric in METRICS
    cells: dict[Key, Stat]
    teacher: dict[Pair, Stat]
    comparison: Comparison
    #: from-scratch runs whose architecture is no pair's student (e.g. teachers being trained):
    #: (dataset, arch, metric) -> Stat
    other_scratch: dict[tuple[str, str, str], Stat]
    #: (row, pair) -> {epoch (1-based, as Lightning's progress counts): mean val top-1 over the seeds}
    curves: dict[tuple[str, Pair], dict[int, float]]
    records: list[RunRecord] = field(default_factory=list)
    #: (row, pair) -> {grad/<term>/<value>: {step: mean over the seeds that logged it}} (GradientShare)
    gradients: dict[tuple[str, Pair], dict[str, dict[int, float]]] = field(default_factory=dict)
    #: every teacher file once (per data set), with the run that trained it
    teachers: list[Teacher] = field(default_factory=list)
    #: trainer.max_epochs -> that length's table; empty unless runs differ only in their length
    schedule: dict[int, LengthTable] = field(default_factory=dict)
    #: (row, pair) -> the trainer.max_epochs of the cell's runs (None: unknown), so a table read by row name
    #: says which length its plain rows are
    epochs: dict[tuple[str, Pair], tuple[int | None, ...]] = field(default_factory=dict)

    @property
    def delta(self) -> dict[Key, float]:
        return self.comparison.delta

    @property
    def paired(self) -> dict[Key, Stat]:
        return self.comparison.paired

    @property
    def intervals(self) -> dict[Key, Interval]:
        return self.comparison.intervals

    @property
    def multiple_datasets(self) -> bool:
        return len({p.dataset for p in self.pairs}) > 1

    @property
    def typical_n(self) -> int:
        """The most common number of seeds per cell (cells with another n are marked)."""
        counts = Counter(s.n for s in self.cells.values())
        return counts.most_common(1)[0][0] if counts else 0

    def pair_label(self, pair: Pair) -> str:
        """The column title: the data set when there are several; the teacher file when another column
        has the same teacher architecture and student."""
        files = sum(
            (p.dataset, p.teacher, p.student) == (pair.dataset, pair.teacher, pair.student)
            for p in self.pairs
        )
        return pair.label(self.multiple_datasets, with_sha=files > 1)


def _term_names(settings: dict[str, Any]) -> set[str]:
    return {k.split(".")[1] for k in settings if k.startswith("terms.")}


def _pair_identity(record: RunRecord) -> tuple:
    """What a row's runs share besides the method and its settings: data set, teacher file and student."""
    return (record.dataset, record.teacher, record.teacher_sha256, record.student)


def variant_label(method: str, settings: dict[str, Any], reference: dict[str, Any]) -> str:
    """``method`` plus how ``settings`` differ from ``reference``.

    E.g. ``pckd (without feature_align)``, ``pckd (category_contrast.weight=0.1)``, ``kd (+at)``.
    """
    own, ref = _term_names(settings), _term_names(reference)
    changes = [f"without {t}" for t in sorted(ref - own)] + [f"+{t}" for t in sorted(own - ref)]
    for key in sorted(set(settings) | set(reference)):
        if key.startswith("terms.") and key.split(".")[1] not in own & ref:
            continue  # a whole term added or removed: said above
        if key not in settings or key not in reference or not same(settings[key], reference[key]):
            shown = format_value(settings[key]) if key in settings else UNSET_LABELS.get(key, "None")
            changes.append(f"{key.removeprefix('terms.')}={shown}")
    return f"{method} ({', '.join(changes)})" if changes else method


def variant_labels(
    records: Iterable[RunRecord], ignored: Callable[[RunRecord], set[str]] = lambda r: set()
) -> dict[int, str]:
    """``id(record)`` -> its row label: the method, qualified by how its settings (less ``ignored``) differ
    from the method's most common setting on the same pair (its experiment settings, :data:`EXPERIMENT_GROUPS`,
    taken from KD's on the pair, so that a method run only in another experiment than KD has no plain row), and
    by its resume note.

    Per pair (data set, teacher file, student), so that per-pair published settings (DKD's β, lr 0.01 for
    MobileNet/ShuffleNet students) stay the method's row instead of a variant of it; ties go to the setting
    that sorts first. Distinct settings always get distinct labels. Runs of several lengths: every method's
    plain row is at one length, KD's most common one (ties: the longest), so that no unlabelled row stands
    beside another of a different length and the Δ vs KD has its baseline; a method not run at that length has
    only labelled rows. Without KD runs of a known length: the distilled runs' most common length, else all
    runs'.
    """
    records = list(records)
    by_student: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        by_student[(record.dataset, record.student)].append(record)
    shared = {}
    for key, group in by_student.items():
        for baseline in (
            [r for r in group if r.method == KD_ROW],
            [r for r in group if not r.is_scratch],
            group,
        ):
            counts = Counter(r.max_epochs for r in baseline if r.max_epochs is not None)
            if counts:
                shared[key] = max(counts, key=lambda n: (counts[n], n))
                break
    by_method: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        by_method[(str(record.method), *_pair_identity(record))].append(record)
    settings = {id(r): {k: v for k, v in r.settings.items() if k not in ignored(r)} for r in records}
    references = {}
    for key, group in by_method.items():
        length = shared.get((group[0].dataset, group[0].student))
        timed = [r for r in group if LENGTH_KEY in settings[id(r)]]
        at_length = [r for r in timed if r.max_epochs == length]
        pool = at_length or group
        signatures = Counter(settings_key(settings[id(r)]) for r in pool)
        reference_key = min(signatures, key=lambda s: (-signatures[s], s))
        reference = next(settings[id(r)] for r in pool if settings_key(settings[id(r)]) == reference_key)
        references[key] = {**reference, LENGTH_KEY: length} if timed and not at_length else reference
    labels: dict[int, str] = {}
    for (method, *pair), group in by_method.items():
        dropped = set().union(*(ignored(r) for r in group))
        # the experiment is KD's: another optimizer, data or schedule shows in the label. A from-scratch run
        # that is plain against the KD experiment of another teacher's pair is that pair's plain row; any
        # other is labelled against the first pair's, so that two experiments never print alike
        reference = references[(method, *pair)]
        by_slot = [
            _in_experiment(reference, kd, dropped) for kd in _kd_references(references, (method, *pair))
        ]
        seen: dict[tuple[int, str], tuple] = {}
        for record in group:
            own = settings[id(record)]
            plain = (i for i, ref in enumerate(by_slot) if variant_label(method, own, ref) == method)
            slot = 0 if record.resume_note else next(plain, 0)
            label = variant_label(method, own, by_slot[slot] if by_slot else reference)
            if record.resume_note:
                label = f"{label} [{record.resume_note}]"
            identity = (settings_key(own), record.resume_note)
            # two settings that print alike stay apart
            if seen.setdefault((slot, label), identity) != identity:
                label = f"{label} #{sorted({*seen.values(), identity}).index(identity) + 1}"
                seen.setdefault((slot, label), identity)
            labels[id(record)] = label
    return labels


def _in_experiment(
    reference: dict[str, Any], kd: dict[str, Any], dropped: AbstractSet[str]
) -> dict[str, Any]:
    """A method's reference setting with the experiment settings (:func:`_experiment_key`) of KD's ``kd``."""
    keys = {k for k in reference.keys() | kd.keys() if _experiment_key(k) and k not in dropped}
    return {k: v for k, v in reference.items() if k not in keys} | {k: kd[k] for k in keys & kd.keys()}


def _experiment_key(key: str) -> bool:
    """A setting of the experiment the method runs in (not of the method: :data:`FOLLOWS_METHOD`). A shared
    augmentation stream is not one: it splits a method's rows (its seeds' views are not independent draws),
    but each run's views are drawn as any stream's, so KD's on the other stream is still its baseline."""
    return (
        key.split(".", 1)[0] in EXPERIMENT_GROUPS and not key.startswith(FOLLOWS_METHOD) and key != AUG_SEED
    )


def _kd_references(references: dict[tuple, dict[str, Any]], group: tuple) -> list[dict[str, Any]]:
    """KD's reference settings for ``group`` (method, data set, teacher, teacher file, student): on the same
    pair, or for a from-scratch group every teacher's on the same data set and student (in sorted order);
    none for KD itself or without KD runs."""
    method, dataset, teacher, sha256, student = group
    if method == KD_ROW:
        return []
    if teacher is not None:
        kd = references.get((KD_ROW, dataset, teacher, sha256, student))
        return [kd] if kd is not None else []
    keys = sorted((k for k in references if k[0] == KD_ROW and (k[1], k[4]) == (dataset, student)), key=repr)
    return [references[k] for k in keys]


def length_followers(records: Iterable[RunRecord], kd: Iterable[RunRecord] = ()) -> set[str]:
    """The settings among :data:`FOLLOWS_LENGTH` that take exactly one value at each trainer.max_epochs in
    ``records`` (one method's runs on one pair): a schedule scaled with the run, not a setting of its own.
    A setting KD's runs on the pair (``kd``) also have must take KD's value at each length: a method run with
    another schedule than KD's at the same length is another experiment, and its label says so."""
    records = list(records)
    keys = {k for r in records for k in r.settings if k.endswith(FOLLOWS_LENGTH)}
    values: dict[str, dict[Any, set[str]]] = {k: defaultdict(set) for k in keys}
    kd_values: dict[str, dict[Any, set[str]]] = {k: defaultdict(set) for k in keys}
    for target, runs in ((values, records), (kd_values, list(kd))):
        for record in runs:
            for key in keys:
                if target is values or key in record.settings:
                    target[key][record.max_epochs].add(repr(record.settings.get(key)))
    return {
        k
        for k, per_length in values.items()
        if all(len(v) == 1 and kd_values[k].get(n, v) == v for n, v in per_length.items())
    }


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
    """Mean val top-1 per epoch, counted from 1 (the CSV log's epoch index is 0-based)."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for record in records:
        for epoch, value in record.curve.items():
            per_epoch[epoch + 1].append(value)
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


def pair_of(record: RunRecord) -> Pair:
    return Pair(record.dataset, str(record.teacher or "—"), str(record.student), record.teacher_sha256 or "")


def _groups(
    records: list[RunRecord], labels: dict[int, str], known: AbstractSet[Pair] = frozenset()
) -> tuple[dict[tuple[str, Pair], list[RunRecord]], list[Pair], list[RunRecord]]:
    """The cells' runs: (row, pair) -> runs, the distillation rows' and each pair's scratch row (the runs
    labelled plain ``ce``); the pairs (``known`` ones too: a schedule length whose scratch runs finished
    before its distilled ones); and the from-scratch runs no pair's scratch row took."""
    groups: dict[tuple[str, Pair], list[RunRecord]] = defaultdict(list)
    for r in records:
        if not r.is_scratch:
            groups[(labels[id(r)], pair_of(r))].append(r)
    pairs = sorted({pair for _, pair in groups} | set(known))
    # a student's scratch runs serve every teacher's pair, but only where they ran KD's experiment: two
    # teachers' KD runs may differ (another lr), and the scratch label can be checked against one of them only
    kd_experiment = {
        pair: Counter(_experiment_of(r) for r in group).most_common(1)[0][0]
        for (label, pair), group in groups.items()
        if label == KD_ROW
    }
    matched: set[int] = set()
    for pair in pairs:
        for r in records:
            same_student = (r.student, r.dataset) == (pair.student, pair.dataset)
            same_experiment = kd_experiment.get(pair, _experiment_of(r)) == _experiment_of(r)
            if r.is_scratch and same_student and same_experiment and labels[id(r)] == SCRATCH_METHOD:
                groups[(SCRATCH_ROW, pair)].append(r)
                matched.add(id(r))
    unmatched = [r for r in records if r.is_scratch and id(r) not in matched]
    return groups, pairs, unmatched


def _experiment_of(record: RunRecord) -> tuple:
    """The run's experiment settings (:func:`_experiment_key`), comparable as one value."""
    return settings_key({k: v for k, v in record.settings.items() if _experiment_key(k)})


def _cells(groups: dict[tuple[str, Pair], list[RunRecord]]) -> dict[Key, Stat]:
    return {
        (label, pair, metric): stat
        for (label, pair), group in groups.items()
        for metric, attr in METRICS.items()
        if (stat := _stat(group, attr)) is not None
    }


def compare_with_kd(
    cells: dict[Key, Stat], rows: list[str], pairs: list[Pair], comparable: Callable[[str, Pair], bool]
) -> Comparison:
    """Each row (and the scratch row) against KD on the same pair and metric, where ``comparable``."""
    out = Comparison()
    for label in [SCRATCH_ROW, *rows]:
        for pair in pairs:
            if label == KD_ROW or not comparable(label, pair):
                continue
            for metric in METRICS:
                key = (label, pair, metric)
                own, kd = cells.get(key), cells.get((KD_ROW, pair, metric))
                if own is None or kd is None:
                    continue
                if label != SCRATCH_ROW:
                    out.delta[key] = own.mean - kd.mean
                paired = paired_difference(own, kd)
                if paired is not None:
                    out.paired[key] = paired
                if paired is not None and paired.n >= 2:
                    interval = paired_interval(paired.values)
                else:  # one common seed is no paired sample: the rows as two samples
                    interval = welch_interval(own.values, kd.values)
                if interval is not None:
                    out.intervals[key] = interval
    return out


def _teachers(distilled: list[RunRecord], teacher_runs: list[RunRecord]) -> list[Teacher]:
    """Every teacher file once per data set: the runs distilled from it and the run that trained it; then the
    teachers' runs no complete run distilled from (e.g. the demo run that trained it was killed)."""
    used: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in distilled:
        used[(r.teacher_id or str(r.run_dir), r.dataset)].append(r)
    trained = {r.trained_teacher: r for r in teacher_runs}
    teachers = []
    for (identity, dataset), runs in sorted(used.items()):
        measured = [
            r.teacher_top1 for r in runs if r.teacher_top1 is not None and math.isfinite(r.teacher_top1)
        ]
        teachers.append(
            Teacher(
                arch=str(runs[0].teacher),
                dataset=dataset,
                file=min((r.teacher_checkpoint for r in runs if r.teacher_checkpoint), default=None),
                sha256=runs[0].teacher_sha256,
                top1=statistics.fmean(measured) if measured else None,
                runs=len(runs),
                trained_in=trained.get(identity),
            )
        )
    listed = {identity for identity, _ in used}
    teachers += [
        Teacher(str(r.student), r.dataset, r.student_weights, None, None, 0, r)
        for r in teacher_runs
        if r.trained_teacher not in listed
    ]
    return teachers


def _schedule(records: list[RunRecord]) -> dict[int, LengthTable]:
    """Per trainer.max_epochs, the runs' table with their length (and what follows it) left out of the rows'
    settings, each row against KD at the same length; empty unless some row was run at several lengths."""
    timed = [r for r in records if r.max_epochs is not None]
    by_method: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in timed:
        by_method[(r.method, *_pair_identity(r))].append(r)
    ignored: dict[int, set[str]] = {}
    for (_, *pair), group in by_method.items():
        dropped = {LENGTH_KEY} | length_followers(group, by_method.get((KD_ROW, *pair), ()))
        ignored.update((id(r), dropped) for r in group)
    labels = variant_labels(timed, lambda r: ignored[id(r)])
    lengths_of: dict[tuple, set[int]] = defaultdict(set)
    for r in timed:
        lengths_of[(labels[id(r)], *_pair_identity(r))].add(int(r.max_epochs))
    if not any(len(lengths) > 1 for lengths in lengths_of.values()):
        return {}
    tables = {}
    known = {pair_of(r) for r in timed if not r.is_scratch}
    for length in sorted({int(r.max_epochs) for r in timed}):
        groups, pairs, _ = _groups([r for r in timed if r.max_epochs == length], labels, known)
        rows = sorted({label for label, _ in groups if label != SCRATCH_ROW}, key=_row_order)
        cells = _cells(groups)
        present = [SCRATCH_ROW] if any(k[0] == SCRATCH_ROW for k in cells) else []
        tables[length] = LengthTable(
            [*present, *rows], cells, compare_with_kd(cells, rows, pairs, lambda label, pair: True)
        )
    return tables


def aggregate(records: list[RunRecord]) -> Report:
    """Group the complete runs of ``records`` into the table; other records are only carried along."""
    complete = [r for r in records if r.complete]
    labels = variant_labels(complete)
    for record in complete:
        record.label = labels[id(record)]
    groups, pairs, unmatched = _groups(complete, labels)
    rows = sorted({label for label, _ in groups if label != SCRATCH_ROW}, key=_row_order)
    cells = _cells(groups)
    curves = {key: _mean_curve(group) for key, group in groups.items()}
    gradients = {
        key: _mean_gradients(group) for key, group in groups.items() if any(r.gradients for r in group)
    }
    #: the schedules (trainer.max_epochs) of each cell's runs: Δ compares rows of one schedule only
    schedules = {key: frozenset(r.max_epochs for r in group) for key, group in groups.items()}

    teacher: dict[Pair, Stat] = {}
    for pair in pairs:
        per_file: dict[str, list[float]] = defaultdict(list)
        for (label, p), group in groups.items():
            if p != pair or label == SCRATCH_ROW:
                continue
            for r in group:
                if r.teacher_top1 is not None and math.isfinite(r.teacher_top1):
                    per_file[r.teacher_id or str(r.run_dir)].append(r.teacher_top1)
        if per_file:
            teacher[pair] = Stat(
                tuple(statistics.fmean(v) for _, v in sorted(per_file.items())), tuple(sorted(per_file))
            )

    def same_schedule(label: str, pair: Pair) -> bool:
        """A row and KD trained for the same number of epochs (a 10- and a 240-epoch Δ says nothing)."""
        own, kd = schedules.get((label, pair)), schedules.get((KD_ROW, pair))
        return own is not None and own == kd and len(own) == 1

    other_groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in unmatched:
        variant = str(r.label).removeprefix(SCRATCH_METHOD)  # "" or " (trainer.max_epochs=30)"
        other_groups[(r.dataset, f"{r.student}{variant}")].append(r)
    other_scratch = {
        (dataset, arch, metric): stat
        for (dataset, arch), group in sorted(other_groups.items())
        for metric, attr in METRICS.items()
        if (stat := _stat(group, attr)) is not None
    }
    distilled = [r for r in complete if not r.is_scratch]
    teacher_runs = [r for r in records if r.status == TEACHER]
    return Report(
        pairs,
        rows,
        cells,
        teacher,
        compare_with_kd(cells, rows, pairs, same_schedule),
        other_scratch,
        curves,
        records,
        gradients,
        _teachers(distilled, teacher_runs),
        _schedule(complete),
        {
            key: tuple(sorted(lengths, key=lambda n: (n is None, n or 0)))
            for key, lengths in schedules.items()
        },
    )


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

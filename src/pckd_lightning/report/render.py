"""Writing a :class:`~pckd_lightning.report.aggregate.Report`: markdown tables, CSV files and figures."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from pckd_lightning.report.aggregate import (
    KD_ROW,
    METRICS,
    SCRATCH_ROW,
    TEACHER_ROW,
    Comparison,
    Key,
    Pair,
    Report,
    Stat,
)
from pckd_lightning.report.collect import COMPLETE, INCOMPLETE, SUPERSEDED, RunRecord
from pckd_lightning.report.stats import MAX_SEEDS, PAIRED, POWER, Interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_TITLES = {
    "best": "Best-epoch top-1 (%)",
    "last": "Last-epoch top-1 (%)",
    "test": "Test top-1 (%), the final student on the evaluation split",
    "test_top5": "Test top-5 (%)",
}
#: the metrics with markdown tables (test top-1 only where runs have it: [holdout val] data sets);
#: every metric of METRICS is in aggregate.csv
MARKDOWN_METRICS = ("best", "last", "test")
CHECK = "✓"
NO_VALUE = "—"
#: marks a Δ vs KD of a row run on other seeds than KD's
OTHER_SEEDS = "†"
RUN_FIELDS = [
    "run_dir",
    "status",
    "reason",
    "dataset",
    "teacher",
    "student",
    "method",
    "label",
    "seed",
    "epochs",
    "max_epochs",
    "teacher_top1",
    "teacher_checkpoint",
    "teacher_sha256",
    "best_top1",
    "last_top1",
    "last_top5",
    "test_top1",
    "test_top5",
    "resume_note",
    "code_commit",
    "terms",
]
INTERVAL_FIELDS = [
    "delta_test",
    "delta_ci_low",
    "delta_ci_high",
    "delta_ci_excludes_0",
    "delta_df",
    "seeds_for_80_power",
]
#: how the code section names runs that record no commit (trained before summary.json had ``code``)
UNKNOWN_CODE = "no commit recorded"
#: the Δ vs KD columns of both CSVs, one meaning each: the difference of the means (over each row's own
#: seeds), the paired Δ over the seeds both have (its sd and seeds), and the interval (paired, or Welch's)
DELTA_FIELDS = ["delta_vs_kd", "paired_delta_vs_kd", "paired_delta_std", "paired_seeds", *INTERVAL_FIELDS]
AGGREGATE_FIELDS = [
    "dataset",
    "teacher",
    "teacher_sha256",
    "student",
    "row",
    "metric",
    "n",
    "epochs",
    "mean",
    "std",
    *DELTA_FIELDS,
    "values",
    "seeds",
]
SCHEDULE_FIELDS = [
    "dataset",
    "teacher",
    "teacher_sha256",
    "student",
    "row",
    "epochs",
    "metric",
    "n",
    "mean",
    "std",
    *DELTA_FIELDS,
    "seeds",
]


def format_stat(
    stat: Stat | None, decimals: int = 2, typical_n: int | None = None, signed: bool = False
) -> str:
    """``mean ± std``; ``mean ± n/a`` for a single value; ``(n=k)`` appended when k is not the usual n."""
    if stat is None:
        return NO_VALUE
    std = "n/a" if stat.std is None else f"{stat.std:.{decimals}f}"
    text = f"{stat.mean:{'+' if signed else ''}.{decimals}f} ± {std}"
    if typical_n is not None and stat.n != typical_n:
        text += f" (n={stat.n})"
    return text


def format_delta(value: float | None, decimals: int = 2) -> str:
    return NO_VALUE if value is None else f"{value:+.{decimals}f}"


def format_interval(interval: Interval | None, decimals: int = 2) -> str:
    """``[low, high]``, with ✓ where it excludes 0; a bound of another sign than 0 is printed with as many more
    decimals as it takes not to read as 0 (``+0.004``, not ``+0.00``, beside a ✓)."""
    if interval is None:
        return NO_VALUE

    def bound(value: float) -> str:
        places = decimals
        while value and round(value, places) == 0 and places < decimals + 6:
            places += 1
        return f"{value:+.{places}f}"

    text = f"[{bound(interval.low)}, {bound(interval.high)}]"
    return f"{text} {CHECK}" if interval.excludes_zero else text


def format_seeds_needed(interval: Interval | None) -> str:
    if interval is None or interval.test != PAIRED:
        return NO_VALUE
    return f"> {MAX_SEEDS}" if interval.seeds_needed is None else str(interval.seeds_needed)


def reading(interval: Interval) -> str:
    """What the interval says, in words: a row is better or worse than KD only where it excludes 0."""
    if interval.verdict == "not resolved":
        return "not resolved (the interval includes 0)"
    return f"{interval.verdict} than KD"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return lines


def _pair_labels(report: Report) -> list[str]:
    return [report.pair_label(p) for p in report.pairs]


def _interval_rows(
    report: Report, rows: list[str], comparison: Comparison, metric: str, decimals: int
) -> list[list[str]]:
    """One line per (row, pair) with an interval: test, seeds, Δ, 95 % CI, seeds for 80 % power, reading."""
    body = []
    for row in rows:
        for pair in report.pairs:
            interval = comparison.intervals.get((row, pair, metric))
            if interval is None:
                continue
            pair_cell = [report.pair_label(pair)] if len(report.pairs) > 1 else []
            body.append(
                [
                    row,
                    *pair_cell,
                    interval.test,
                    " vs ".join(str(n) for n in interval.sizes),
                    format_delta(interval.delta, decimals),
                    format_interval(interval, decimals),
                    format_seeds_needed(interval),
                    reading(interval),
                ]
            )
    return body


def _interval_header(report: Report) -> list[str]:
    pair = ["pair"] if len(report.pairs) > 1 else []
    return ["method", *pair, "test", "seeds", "Δ", "95 % CI", f"seeds for {POWER:.0%} power", "reading"]


def render_markdown(report: Report, decimals: int = 2, title: str = "Distillation results") -> str:
    n = report.typical_n
    complete = [r for r in report.records if r.status == COMPLETE]
    lines = [f"# {title}", ""]
    seeds = f"n = {n} seed{'s' if n != 1 else ''} unless marked (n=k); " if report.cells else ""
    lines.append(
        f"{len(complete)} complete run{'s' if len(complete) != 1 else ''}. Cells: mean ± sample standard "
        f"deviation (ddof=1) over seeds, in percent; {seeds}a single run shows `± n/a`. "
        "Runs share a row only when they differ in nothing but the seed (the teacher file included). "
        "The teacher row counts each distinct teacher file once. "
        "Δ vs KD: mean(method) − mean(kd) on the same pair, in percentage points; paired Δ: the mean ± std "
        "of method(seed) − kd(seed) over the seeds both have. Its 95 % confidence interval is Student's t "
        "over the paired seeds (Welch's for rows that share fewer than two seeds with KD), marked ✓ where it "
        "excludes 0; "
        "a row is called better or worse than KD only there. Seeds for 80 % power: how many paired seeds a "
        "two-sided paired t-test (α = 0.05) needs to resolve the observed Δ (effect = mean / std)."
    )
    if report.multiple_datasets or (report.pairs and report.pairs[0].dataset != "unknown"):
        datasets = ", ".join(sorted({p.dataset for p in report.pairs}))
        lines.append(f"Data set: {datasets}.")
    kd_lengths = {n for p in report.pairs for n in report.epochs.get((KD_ROW, p), ()) if n is not None}
    if len(kd_lengths) == 1:  # the length a row without a trainer.max_epochs label has
        lines.append(
            f"Unlabelled rows are {kd_lengths.pop()}-epoch runs (KD's length); other lengths are labelled."
        )
    lines.append("")
    labels = _pair_labels(report)
    if not report.pairs:
        lines += ["No complete distillation runs found.", ""]
    for metric in MARKDOWN_METRICS:
        if not report.pairs or not any(key[2] == metric for key in report.cells):
            continue
        lines += [f"## {METRIC_TITLES[metric]}", ""]
        body = [[TEACHER_ROW] + [format_stat(report.teacher.get(p), decimals) for p in report.pairs]]
        if any((SCRATCH_ROW, p, metric) in report.cells for p in report.pairs):
            body.append(
                [SCRATCH_ROW]
                + [format_stat(report.cells.get((SCRATCH_ROW, p, metric)), decimals, n) for p in report.pairs]
            )
        for row in report.rows:
            body.append(
                [row] + [format_stat(report.cells.get((row, p, metric)), decimals, n) for p in report.pairs]
            )
        lines += [*_table(["method", *labels], body), ""]
        lines += _comparison_tables(report, metric, decimals)
    lines += _teachers_section(report, decimals)
    lines += _code_section(complete)
    lines += _schedule_section(report, decimals)
    if report.other_scratch:
        lines += ["## Other from-scratch runs (not a pair's student)", ""]
        keys = sorted({(d, a) for d, a, _ in report.other_scratch})
        body = [
            [a, d, *(format_stat(report.other_scratch.get((d, a, m)), decimals) for m in ("best", "last"))]
            for d, a in keys
        ]
        lines += [*_table(["architecture", "data set", "best top-1", "last top-1"], body), ""]
    for status, heading in (
        (INCOMPLETE, "Incomplete runs (not averaged in)"),
        (SUPERSEDED, "Superseded reruns (not averaged in)"),
    ):
        listed = [r for r in report.records if r.status == status]
        if not listed:
            continue
        lines += [f"## {heading}", ""]
        body = [
            [str(r.run_dir), str(r.method), _pair_text(r), str(r.seed), _epochs_text(r), r.reason]
            for r in listed
        ]
        lines += [*_table(["run", "method", "pair", "seed", "epochs", "reason"], body), ""]
    notes = [r for r in complete if r.reason]
    if notes:
        lines += ["## Notes", ""] + [f"- {r.run_dir}: {r.reason}" for r in notes] + [""]
    return "\n".join(lines)


def _other_seeds(report: Report, row: str, pair: Pair, metric: str) -> bool:
    """Whether ``row`` was run on other seeds than KD on ``pair``."""
    own, kd = report.cells.get((row, pair, metric)), report.cells.get((KD_ROW, pair, metric))
    return own is not None and kd is not None and set(own.seeds) != set(kd.seeds)


def _comparison_tables(report: Report, metric: str, decimals: int) -> list[str]:
    """The Δ vs KD, paired Δ and confidence-interval tables of one metric."""
    lines: list[str] = []
    labels, title, n = _pair_labels(report), METRIC_TITLES[metric].lower(), report.typical_n
    delta_rows, unmatched = [], False
    for row in report.rows:
        values = [report.delta.get((row, p, metric)) for p in report.pairs]
        present = [v for v in values if v is not None]
        if present:
            average = sum(present) / len(present)
            cells = []
            for pair, value in zip(report.pairs, values, strict=True):
                other = value is not None and _other_seeds(report, row, pair, metric)
                unmatched |= other
                cells.append(format_delta(value, decimals) + (f" {OTHER_SEEDS}" if other else ""))
            # an average over fewer pairs is not comparable with the full rows' averages: say how many
            share = "" if len(present) == len(values) else f" ({len(present)} of {len(values)} pairs)"
            delta_rows.append([row, *cells, format_delta(average, decimals) + share])
    if delta_rows:
        lines += [f"### Δ vs KD, {title}", ""]
        lines += [*_table(["method", *labels, "average over pairs"], delta_rows), ""]
        if unmatched:
            lines += [
                f"{OTHER_SEEDS}: run on other seeds than KD's, so this Δ compares means over different seeds; "
                "the interval table's Δ is paired over the seeds both have (or Welch's, with fewer than two).",
                "",
            ]
    paired_rows = [
        [
            row,
            *(
                format_stat(report.paired.get((row, p, metric)), decimals, n, signed=True)
                for p in report.pairs
            ),
        ]
        for row in [SCRATCH_ROW, *report.rows]
        if any((row, p, metric) in report.paired for p in report.pairs)
    ]
    if paired_rows:
        lines += [f"### Paired Δ vs KD over the same seeds, {title}", ""]
        lines += [*_table(["method", *labels], paired_rows), ""]
    interval_rows = _interval_rows(report, [SCRATCH_ROW, *report.rows], report.comparison, metric, decimals)
    if interval_rows:
        lines += [f"### Δ vs KD with its 95 % confidence interval, {title}", ""]
        lines += [*_table(_interval_header(report), interval_rows), ""]
    return lines


def _teachers_section(report: Report, decimals: int) -> list[str]:
    """Each teacher file once: its accuracy as measured by the runs distilled from it, and where it was trained."""
    if not report.teachers:
        return []
    body = []
    for t in report.teachers:
        trained = NO_VALUE
        if t.trained_in is not None:
            run = t.trained_in
            trained = f"{run.run_dir} (best {_number(run.best_top1, decimals)}, last {_number(run.last_top1, decimals)})"
        body.append(
            [
                t.arch,
                t.dataset,
                t.file or NO_VALUE,
                t.sha256 or "not recorded",
                _number(t.top1, decimals),
                str(t.runs),
                trained,
            ]
        )
    header = ["teacher", "data set", "file", "sha256", "val top-1", "runs distilled from it", "trained in"]
    return ["## Teachers", "", *_table(header, body), ""]


def _number(value: float | None, decimals: int) -> str:
    return NO_VALUE if value is None else f"{value:.{decimals}f}"


def _code_section(complete: list[RunRecord]) -> list[str]:
    """Which code trained the averaged runs: one line when they agree, else each row's code versions, so that
    a row averaging runs of several commits (or with uncommitted changes) says so."""
    versions = Counter(_short(r.code_commit) for r in complete)
    if not versions:
        return []
    if len(versions) == 1:
        (only,) = versions
        said = "record no commit" if only == UNKNOWN_CODE else f"were trained at {only}"
        return [f"Code: all {len(complete)} averaged runs {said} (runs.csv: each run's `code_commit`).", ""]
    by_row: dict[str, Counter[str]] = defaultdict(Counter)
    for r in complete:
        by_row[str(r.label or r.method)][_short(r.code_commit)] += 1
    body = [[row, ", ".join(f"{v} ({n})" for v, n in sorted(c.items()))] for row, c in sorted(by_row.items())]
    return [
        "## Code versions",
        "",
        "The averaged runs were trained by more than one code version (`+dirty`: with uncommitted changes; "
        "`a→b`: resumed under other code); a row listing several averages them (runs.csv: each run's):",
        "",
        *_table(["row", "code versions (runs)"], body),
        "",
    ]


def _short(commit: str | None) -> str:
    """A code_commit with each hash cut to 12 characters; :data:`UNKNOWN_CODE` for a run without one."""
    return UNKNOWN_CODE if commit is None else re.sub(r"[0-9a-f]{40}", lambda m: m.group()[:12], commit)


def _schedule_section(report: Report, decimals: int) -> list[str]:
    """One table per schedule length: mean ± std best/last, and the paired Δ vs KD with its 95 % CI."""
    if not report.schedule:
        return []
    lines = [
        "## Schedule study: each length apart",
        "",
        "Runs that differ only in trainer.max_epochs (and the settings that follow it: scaled milestones "
        "and warm-ups) are one row at each length; Δ vs KD compares KD at the same length. "
        "schedule.csv holds these numbers, schedule.png draws the Δs against the length.",
        "",
    ]
    for length, table in report.schedule.items():
        lines += [f"### {length} epoch{'s' if length != 1 else ''}", ""]
        counts = Counter(stat.n for stat in table.cells.values())
        typical_n = max(counts, key=lambda n: (counts[n], n)) if counts else None  # (n=k) marks the others
        if not table.cells:
            lines += ["No run of a pair has finished at this length yet.", ""]
        for pair in report.pairs:
            rows = [r for r in table.rows if any((r, pair, m) in table.cells for m in METRICS)]
            if not rows:
                continue
            if len(report.pairs) > 1:
                lines += [f"{report.pair_label(pair)}:", ""]
            body = []
            for row in rows:
                cells = [
                    format_stat(table.cells.get((row, pair, m)), decimals, typical_n)
                    for m in ("best", "last")
                ]
                for metric in ("best", "last"):
                    key = (row, pair, metric)
                    interval = table.comparison.intervals.get(key)
                    delta = format_stat(table.comparison.paired.get(key), decimals, typical_n, signed=True)
                    if interval is not None and interval.test != PAIRED:
                        delta = f"{format_delta(interval.delta, decimals)} ({interval.test})"
                    cells += [NO_VALUE if row == KD_ROW else delta, format_interval(interval, decimals)]
                cells.append(format_seeds_needed(table.comparison.intervals.get((row, pair, "best"))))
                body.append([row, *cells])
            header = [
                "method",
                "best",
                "last",
                "paired Δ best",
                "95 % CI",
                "paired Δ last",
                "95 % CI",
                f"seeds for {POWER:.0%} power (best)",
            ]
            lines += [*_table(header, body), ""]
    return lines


def _pair_text(r: RunRecord) -> str:
    return f"{r.teacher or NO_VALUE} → {r.student or NO_VALUE} ({r.dataset})"


def _epochs_text(r: RunRecord) -> str:
    if r.epochs is None:
        return NO_VALUE
    return f"{r.epochs}/{r.max_epochs}" if r.max_epochs is not None else str(r.epochs)


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_runs_csv(records: list[RunRecord], path: Path) -> Path:
    """One row per run folder found (complete, incomplete, superseded, teacher), with its status and reason."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for r in records:
            row = {key: _csv_value(getattr(r, key)) for key in RUN_FIELDS if key != "terms"}
            row["terms"] = ";".join(f"{k}={v:g}" for k, v in r.terms.items())
            writer.writerow(row)
    return path


def _interval_columns(interval: Interval | None) -> dict[str, object]:
    if interval is None:
        return dict.fromkeys(INTERVAL_FIELDS, "")
    return {
        "delta_test": interval.test,
        "delta_ci_low": interval.low,
        "delta_ci_high": interval.high,
        "delta_ci_excludes_0": interval.excludes_zero,
        "delta_df": interval.df,
        "seeds_for_80_power": "" if interval.test != PAIRED else interval.seeds_needed or f">{MAX_SEEDS}",
    }


def _delta_columns(delta: float | None, paired: Stat | None, interval: Interval | None) -> dict[str, object]:
    """:data:`DELTA_FIELDS` of one cell."""
    return {
        "delta_vs_kd": _csv_value(delta),
        "paired_delta_vs_kd": "" if paired is None else paired.mean,
        "paired_delta_std": "" if paired is None else _csv_value(paired.std),
        "paired_seeds": "" if paired is None else ";".join(str(s) for s in paired.seeds),
        **_interval_columns(interval),
    }


def _cell_line(pair: Pair, row: str, metric: str, stat: Stat) -> dict[str, object]:
    return {
        "dataset": pair.dataset,
        "teacher": pair.teacher,
        "teacher_sha256": pair.teacher_sha256,
        "student": pair.student,
        "row": row,
        "metric": metric,
        "n": stat.n,
        "mean": stat.mean,
        "std": _csv_value(stat.std),
        "seeds": ";".join(str(s) for s in stat.seeds),
    }


def write_aggregate_csv(report: Report, path: Path) -> Path:
    """One row per table cell: pair, row, metric, n, mean, std (ddof=1), Δ vs KD with its 95 % CI, values."""

    def line(pair: Pair, row: str, metric: str, stat: Stat, key: Key | None = None) -> dict[str, object]:
        found = key is not None
        lengths = report.epochs.get((row, pair), ()) if found else ()
        return {
            **_cell_line(pair, row, metric, stat),
            "epochs": ";".join("" if n is None else str(n) for n in lengths),
            **_delta_columns(
                report.delta.get(key) if found else None,
                report.paired.get(key) if found else None,
                report.intervals.get(key) if found else None,
            ),
            "values": ";".join(repr(v) for v in stat.values),
        }

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=AGGREGATE_FIELDS)
        writer.writeheader()
        for pair in report.pairs:
            if pair in report.teacher:
                writer.writerow(line(pair, TEACHER_ROW, "teacher", report.teacher[pair]))
            for row in [SCRATCH_ROW, *report.rows]:
                for metric in METRICS:
                    stat = report.cells.get((row, pair, metric))
                    if stat is not None:
                        writer.writerow(line(pair, row, metric, stat, (row, pair, metric)))
        for (dataset, arch, metric), stat in report.other_scratch.items():
            writer.writerow(line(Pair(dataset, "", arch), SCRATCH_ROW, metric, stat))
    return path


def write_schedule_csv(report: Report, path: Path) -> Path | None:
    """The schedule study per length (one line per row, pair, length and metric), for a notebook to redraw
    schedule.png; None (and no file) when the runs have one length."""
    if not report.schedule:
        return None
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SCHEDULE_FIELDS)
        writer.writeheader()
        for length, table in report.schedule.items():
            for (row, pair, metric), stat in table.cells.items():
                key = (row, pair, metric)
                comparison = table.comparison
                writer.writerow(
                    {
                        **_cell_line(pair, row, metric, stat),
                        "epochs": length,
                        **_delta_columns(
                            comparison.delta.get(key),
                            comparison.paired.get(key),
                            comparison.intervals.get(key),
                        ),
                    }
                )
    return path


def _canvas_figure(width: float, height: float) -> Figure:
    """A figure on matplotlib's Agg canvas directly (no pyplot), so the caller's backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def curves_figure(report: Report) -> Figure:
    """Validation top-1 per epoch, one panel per pair, one line per row (mean over seeds); epochs counted
    from 1 on integer ticks."""
    from matplotlib.ticker import MaxNLocator

    pairs = report.pairs or [None]
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig = _canvas_figure(5.5 * cols, 4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    labels = _pair_labels(report)
    for ax, pair, label in zip(axes.flat, pairs, labels or ["no complete runs"], strict=False):
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        drawn = False
        for index, row in enumerate([SCRATCH_ROW, *report.rows]):  # a row keeps its colour in every panel
            curve = report.curves.get((row, pair)) if pair is not None else None
            if curve:
                marker = "." if len(curve) < 30 else None
                ax.plot(list(curve), list(curve.values()), marker=marker, label=row, color=f"C{index % 10}")
                drawn = True
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no val/top1 curves logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def write_curves_png(report: Report, path: Path) -> Path:
    """:func:`curves_figure` as a PNG."""
    curves_figure(report).savefig(path, dpi=100)
    return path


def schedule_figure(report: Report) -> Figure | None:
    """Δ vs KD against the schedule length, one line per row, its 95 % interval as error bars; one panel per
    pair and metric (best, last). None when it would draw nothing: the runs have one length, or no row has a
    paired interval vs KD yet (scratch runs only, one seed, no KD)."""
    if not any(table.comparison.intervals for table in report.schedule.values()):
        return None
    lengths = list(report.schedule)
    panels = [(pair, metric) for pair in report.pairs for metric in ("best", "last")]
    fig = _canvas_figure(5.5 * 2, 4 * len(report.pairs))
    axes = fig.subplots(len(report.pairs), 2, squeeze=False)
    rows = list(dict.fromkeys(r for table in report.schedule.values() for r in table.rows if r != KD_ROW))
    dodge = 0.015 * (lengths[-1] - lengths[0])  # side by side at each length, so the bars stay apart
    for ax, (pair, metric) in zip(axes.flat, panels, strict=True):
        ax.set_title(f"{report.pair_label(pair)}: {metric}-epoch top-1")
        ax.set(xlabel="schedule length (epochs)", ylabel="Δ vs KD (percentage points)", xticks=lengths)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
        for index, row in enumerate(rows):  # a row keeps its colour in every panel
            points = [
                (length, interval)
                for length, table in report.schedule.items()
                if (interval := table.comparison.intervals.get((row, pair, metric))) is not None
            ]
            if points:
                x = [length + (index - (len(rows) - 1) / 2) * dodge for length, _ in points]
                y = [i.delta for _, i in points]
                errors = [[i.delta - i.low for _, i in points], [i.high - i.delta for _, i in points]]
                ax.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=row, color=f"C{index % 10}")
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_schedule_png(report: Report, path: Path) -> Path | None:
    """:func:`schedule_figure` as a PNG; None (and no file) when it draws nothing."""
    fig = schedule_figure(report)
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    return path


def write_gradients_png(report: Report, path: Path) -> Path | None:
    """GradientShare's curves (mean over seeds), one column per row that logged them: the L2 norm of each
    term's weighted gradient on the student (log scale) and its cosine with CE's, per training step.
    None (and no file) when no run logged ``grad/*``."""
    panels = [(key, report.gradients[key]) for key in sorted(report.gradients, key=lambda k: (k[1], k[0]))]
    if not panels:
        return None
    fig = _canvas_figure(5.5 * len(panels), 7)
    axes = fig.subplots(2, len(panels), squeeze=False)
    for column, ((row, pair), series) in enumerate(panels):
        norm_ax, cos_ax = axes[0, column], axes[1, column]
        norm_ax.set_title(f"{row}: {pair.teacher} -> {pair.student}")
        terms = sorted({key.split("/")[1] for key in series})
        for index, term in enumerate(terms):  # a term keeps its colour in both panels
            for ax, value in ((norm_ax, "norm"), (cos_ax, "cos_ce")):
                points = series.get(f"grad/{term}/{value}")
                if points:
                    ax.plot(list(points), list(points.values()), label=term, color=f"C{index % 10}")
        norm_ax.set(yscale="log", ylabel="|gradient of weight·term| on the student")
        cos_ax.set(xlabel="training step", ylabel="cosine with CE's gradient", ylim=(-1.05, 1.05))
        for ax in (norm_ax, cos_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

"""Writing a :class:`~pckd_lightning.report.aggregate.Report`: markdown tables, CSV files and a curve plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pckd_lightning.report.aggregate import METRICS, SCRATCH_ROW, TEACHER_ROW, Pair, Report, Stat
from pckd_lightning.report.collect import COMPLETE, INCOMPLETE, SUPERSEDED, RunRecord

METRIC_TITLES = {"best": "Best-epoch top-1 (%)", "last": "Last-epoch top-1 (%)"}
NO_VALUE = "—"
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
    "best_top1",
    "last_top1",
    "last_top5",
    "terms",
]
AGGREGATE_FIELDS = [
    "dataset",
    "teacher",
    "student",
    "row",
    "metric",
    "n",
    "mean",
    "std",
    "delta_vs_kd",
    "paired_delta_vs_kd",
    "paired_delta_std",
    "paired_seeds",
    "values",
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return lines


def _pair_labels(report: Report) -> list[str]:
    return [p.label(report.multiple_datasets) for p in report.pairs]


def render_markdown(report: Report, decimals: int = 2, title: str = "Distillation results") -> str:
    n = report.typical_n
    complete = [r for r in report.records if r.status == COMPLETE]
    lines = [f"# {title}", ""]
    seeds = f"n = {n} seed{'s' if n != 1 else ''} unless marked (n=k); " if report.cells else ""
    lines.append(
        f"{len(complete)} complete run{'s' if len(complete) != 1 else ''}. Cells: mean ± sample standard "
        f"deviation (ddof=1) over seeds, in percent; {seeds}a single run shows `± n/a`. "
        "The teacher row counts each distinct teacher checkpoint once. "
        "Δ vs KD: mean(method) − mean(kd) on the same pair, in percentage points; paired Δ: the mean ± std "
        "of method(seed) − kd(seed) over the seeds both have."
    )
    if report.multiple_datasets or (report.pairs and report.pairs[0].dataset != "unknown"):
        datasets = ", ".join(sorted({p.dataset for p in report.pairs}))
        lines.append(f"Data set: {datasets}.")
    lines.append("")
    labels = _pair_labels(report)
    if not report.pairs:
        lines += ["No complete distillation runs found.", ""]
    for metric in METRICS:
        if not report.pairs:
            break
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
        delta_rows = []
        for row in report.rows:
            values = [report.delta.get((row, p, metric)) for p in report.pairs]
            if all(v is None for v in values):
                continue
            present = [v for v in values if v is not None]
            average = sum(present) / len(present)
            delta_rows.append(
                [row, *(format_delta(v, decimals) for v in values), format_delta(average, decimals)]
            )
        if delta_rows:
            lines += [f"### Δ vs KD, {METRIC_TITLES[metric].lower()}", ""]
            lines += [*_table(["method", *labels, "average over pairs"], delta_rows), ""]
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
            lines += [f"### Paired Δ vs KD over the same seeds, {METRIC_TITLES[metric].lower()}", ""]
            lines += [*_table(["method", *labels], paired_rows), ""]
    if report.other_scratch:
        lines += ["## Other from-scratch runs (not a pair's student, e.g. teachers)", ""]
        keys = sorted({(d, a) for d, a, _ in report.other_scratch})
        body = [
            [a, d, *(format_stat(report.other_scratch.get((d, a, m)), decimals) for m in METRICS)]
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
    """One row per run folder found (complete, incomplete and superseded), with its status and reason."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for r in records:
            row = {key: _csv_value(getattr(r, key)) for key in RUN_FIELDS if key != "terms"}
            row["terms"] = ";".join(f"{k}={v:g}" for k, v in r.terms.items())
            writer.writerow(row)
    return path


def write_aggregate_csv(report: Report, path: Path) -> Path:
    """One row per table cell: pair, row, metric (best/last), n, mean, std (ddof=1), Δ vs KD, values."""

    def line(
        pair: Pair, row: str, metric: str, stat: Stat, delta: float | None, paired: Stat | None = None
    ) -> dict[str, object]:
        return {
            "dataset": pair.dataset,
            "teacher": pair.teacher,
            "student": pair.student,
            "row": row,
            "metric": metric,
            "n": stat.n,
            "mean": stat.mean,
            "std": _csv_value(stat.std),
            "delta_vs_kd": _csv_value(delta),
            "paired_delta_vs_kd": "" if paired is None else paired.mean,
            "paired_delta_std": "" if paired is None else _csv_value(paired.std),
            "paired_seeds": "" if paired is None else ";".join(str(s) for s in paired.seeds),
            "values": ";".join(repr(v) for v in stat.values),
            "seeds": ";".join(str(s) for s in stat.seeds),
        }

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=AGGREGATE_FIELDS)
        writer.writeheader()
        for pair in report.pairs:
            if pair in report.teacher:
                writer.writerow(line(pair, TEACHER_ROW, "teacher", report.teacher[pair], None))
            for row in [SCRATCH_ROW, *report.rows]:
                for metric in METRICS:
                    stat = report.cells.get((row, pair, metric))
                    if stat is not None:
                        key = (row, pair, metric)
                        writer.writerow(
                            line(pair, row, metric, stat, report.delta.get(key), report.paired.get(key))
                        )
        for (dataset, arch, metric), stat in report.other_scratch.items():
            writer.writerow(line(Pair(dataset, "", arch), SCRATCH_ROW, metric, stat, None))
    return path


def write_curves_png(report: Report, path: Path) -> Path:
    """Validation top-1 per epoch, one panel per pair, one line per row (mean over seeds).

    Drawn on matplotlib's Agg canvas directly (no pyplot), so the caller's backend is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = report.pairs or [None]
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(5.5 * cols, 4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    labels = _pair_labels(report)
    for ax, pair, label in zip(axes.flat, pairs, labels or ["no complete runs"], strict=False):
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
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
    fig.savefig(path, dpi=100)
    return path


def write_gradients_png(report: Report, path: Path) -> Path | None:
    """GradientShare's curves (mean over seeds), one column per row that logged them: the L2 norm of each
    term's weighted gradient on the student (log scale) and its cosine with CE's, per training step.
    None (and no file) when no run logged ``grad/*``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(key, report.gradients[key]) for key in sorted(report.gradients, key=lambda k: (k[1], k[0]))]
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 7))
    FigureCanvasAgg(fig)
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

"""``pckd-report FOLDER [--out DIR]``: the comparison table of every finished run below FOLDER.

Writes into ``--out`` (default ``FOLDER/report``):

* ``report.md``: two tables, best-epoch and last-epoch top-1 (rows: teacher, student (scratch), one per
  method; columns: teacher → student pairs; cells: mean ± sample std over seeds), and the test top-1 of
  runs validated on a holdout (``[holdout val]`` data sets); each followed by Δ vs KD, the paired Δ and the
  Δ's 95 % confidence interval (✓ where it excludes 0) with the seeds 80 % power needs; then each teacher
  file once, the schedule study (when runs differ only in their length), and the runs not averaged in;
* ``runs.csv``: one line per run folder found, with its status and the reason when it does not count;
* ``aggregate.csv``: one line per table cell, with its runs' epochs, n, mean, std, Δ vs KD with its interval and the values;
* ``curves.png``: validation top-1 per epoch (mean over seeds), one panel per pair, one line per method;
* ``schedule.csv`` and ``schedule.png`` (when runs differ only in trainer.max_epochs and what follows it):
  per length, each row's Δ vs KD at that length with its 95 % interval;
* ``gradients.png`` (when runs logged GradientShare's ``grad/*``): each term's gradient norm on the student
  and its cosine with CE's per training step, mean over seeds, one column per row.

Runs are one row only when they differ in nothing but the seed: data set, teacher architecture and file
(SHA-256), student, method, every distillation, optimizer, scheduler, data, precision and trainer setting
that changes a result, and how the run was resumed (see :func:`pckd_lightning.report.collect.row_key`).

The markdown is printed to stdout as well. Exit status 0 when at least one complete run was found, else 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pckd_lightning.report.aggregate import Report, aggregate
from pckd_lightning.report.collect import collect_runs
from pckd_lightning.report.render import (
    render_markdown,
    write_aggregate_csv,
    write_curves_png,
    write_gradients_png,
    write_runs_csv,
    write_schedule_csv,
    write_schedule_png,
)


def build_report(
    folder: str | Path, out_dir: str | Path | None = None, plot: bool = True, decimals: int = 2
) -> tuple[Report, str]:
    """Collect, aggregate and write every output; returns the report and its markdown."""
    folder = Path(folder)
    out = Path(out_dir) if out_dir is not None else folder / "report"
    records = collect_runs(folder)
    report = aggregate(records)
    markdown = render_markdown(report, decimals=decimals, title=f"Distillation results: {folder}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown + "\n")
    write_runs_csv(records, out / "runs.csv")
    write_aggregate_csv(report, out / "aggregate.csv")
    write_schedule_csv(report, out / "schedule.csv")
    if plot:
        try:
            write_curves_png(report, out / "curves.png")
            write_schedule_png(report, out / "schedule.png")
            write_gradients_png(report, out / "gradients.png")
        except ImportError:
            print("pckd-report: matplotlib is not installed; curves.png not written", file=sys.stderr)
    return report, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pckd-report",
        description="Mean ± std over seeds of every finished pckd-train run below FOLDER, as the paper's table.",
    )
    parser.add_argument("folder", type=Path, help="searched recursively for run folders (summary.json)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: FOLDER/report)")
    parser.add_argument("--decimals", type=int, default=2, help="decimals in the markdown (default 2)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG figures")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"no such folder: {args.folder}")
    report, markdown = build_report(args.folder, args.out, plot=not args.no_plot, decimals=args.decimals)
    print(markdown)
    out = args.out if args.out is not None else args.folder / "report"
    written = [
        name
        for name in ("schedule.csv", "curves.png", "schedule.png", "gradients.png")
        if (out / name).is_file() and (name.endswith(".csv") or not args.no_plot)
    ]
    print(f"\nwritten: {out}/" + ", ".join(["report.md", "runs.csv", "aggregate.csv", *written]))
    if not any(r.complete for r in report.records):
        print(f"pckd-report: no complete run found below {args.folder}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

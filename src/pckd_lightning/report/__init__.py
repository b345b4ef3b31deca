"""``pckd-report``: the paper's comparison table from finished run folders.

>>> from pckd_lightning.report import build_report
>>> report, markdown = build_report("outputs", out_dir="outputs/report")   # doctest: +SKIP

Modules: :mod:`~pckd_lightning.report.collect` (find and read run folders),
:mod:`~pckd_lightning.report.aggregate` (mean ± sample std over seeds, Δ vs KD, the schedule study),
:mod:`~pckd_lightning.report.stats` (the Δ's 95 % confidence interval, seeds for 80 % power),
:mod:`~pckd_lightning.report.render` (markdown, CSV, PNG) and :mod:`~pckd_lightning.report.cli`.
"""

from pckd_lightning.report.aggregate import Pair, Report, Stat, Teacher, aggregate
from pckd_lightning.report.cli import build_report, main
from pckd_lightning.report.collect import RunRecord, collect_runs, read_run, row_key
from pckd_lightning.report.render import (
    render_markdown,
    write_aggregate_csv,
    write_curves_png,
    write_runs_csv,
    write_schedule_csv,
    write_schedule_png,
)
from pckd_lightning.report.stats import Interval, paired_interval, seeds_for_power, welch_interval

__all__ = [
    "Interval",
    "Pair",
    "Report",
    "RunRecord",
    "Stat",
    "Teacher",
    "aggregate",
    "build_report",
    "collect_runs",
    "main",
    "paired_interval",
    "read_run",
    "render_markdown",
    "row_key",
    "seeds_for_power",
    "welch_interval",
    "write_aggregate_csv",
    "write_curves_png",
    "write_runs_csv",
    "write_schedule_csv",
    "write_schedule_png",
]

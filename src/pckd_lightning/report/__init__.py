"""``pckd-report``: the paper's comparison table from finished run folders.

>>> from pckd_lightning.report import build_report
>>> report, markdown = build_report("outputs", out_dir="outputs/report")   # doctest: +SKIP

Modules: :mod:`~pckd_lightning.report.collect` (find and read run folders),
:mod:`~pckd_lightning.report.aggregate` (mean ± sample std over seeds, Δ vs KD),
:mod:`~pckd_lightning.report.render` (markdown, CSV, PNG) and :mod:`~pckd_lightning.report.cli`.
"""

from pckd_lightning.report.aggregate import Pair, Report, Stat, aggregate
from pckd_lightning.report.cli import build_report, main
from pckd_lightning.report.collect import RunRecord, collect_runs, read_run
from pckd_lightning.report.render import (
    render_markdown,
    write_aggregate_csv,
    write_curves_png,
    write_runs_csv,
)

__all__ = [
    "Pair",
    "Report",
    "RunRecord",
    "Stat",
    "aggregate",
    "build_report",
    "collect_runs",
    "main",
    "read_run",
    "render_markdown",
    "write_aggregate_csv",
    "write_curves_png",
    "write_runs_csv",
]

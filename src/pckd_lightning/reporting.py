"""Human-readable end-of-run output."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print what was trained, its accuracy and where the outputs went."""
    console = console or Console()
    table = Table(title="pckd-lightning run summary", show_header=False)
    if summary.get("teacher_training"):
        table.add_row("teacher trained now", f"{summary['teacher_training']['epochs']} epochs")
    rows = {
        "method": summary["method"],
        "teacher -> student": f"{summary['teacher'] or '(none)'} -> {summary['student']}",
        "teacher val top-1": _pct(summary["teacher_top1"]),
        "student best val top-1": _pct(summary["best_top1"]),
        "student last val top-1": _pct(summary["last_top1"]),
        "epochs": str(summary["epochs"]),
        "output folder": summary["output_dir"],
        "student weights": summary["student_weights"],
        "best checkpoint": str(summary["best_checkpoint"]),
    }
    for reason in summary["skipped_terms"].values():
        rows["note"] = reason
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)

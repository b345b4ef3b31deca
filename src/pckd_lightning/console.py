"""What a run prints: the resolved config at the start and the summary at the end (a tree and a table on a
terminal, plain untruncated lines in a log file)."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

log = logging.getLogger("pckd_lightning.summary")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def summary_rows(summary: dict[str, Any]) -> dict[str, str]:
    """What was trained, its accuracy and where the outputs went."""
    rows = {}
    if summary.get("teacher_training"):
        rows["teacher trained now"] = f"{summary['teacher_training']['epochs']} epochs"
    rows |= {
        "status": summary.get("status", "complete"),
        "method": summary["method"],
        "teacher -> student": f"{summary['teacher'] or '(none)'} -> {summary['student']}",
        "teacher val top-1": _pct(summary["teacher_top1"]),
        "student best val top-1": _pct(summary["best_top1"]),
        "student last val top-1": _pct(summary["last_top1"]),
        **(
            {"student test top-1 (final)": _pct(summary.get("test_top1"))}
            if summary.get("val_source") == "holdout"
            else {}
        ),
        "epochs": str(summary["epochs"]),
        "output folder": summary["output_dir"],
        "student weights": str(summary["student_weights"]),
        "best checkpoint": str(summary["best_checkpoint"]),
    }
    for reason in summary["skipped_terms"].values():
        rows["note"] = reason
    return rows


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """A table on a terminal; elsewhere (Slurm's log file, a pipe) one ``key: value`` line per row, through
    logging, so that ``train.log`` has it too and no path is cut to the console's width."""
    console = console or Console()
    rows = summary_rows(summary)
    if not console.is_terminal:
        for key, value in rows.items():
            log.info("%s: %s", key, value)
        return
    table = Table(title="pckd-lightning run summary", show_header=False)
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def print_config_tree(cfg: DictConfig, console: Console | None = None) -> None:
    """The resolved config at the start of a run: a tree of its sections on a terminal; elsewhere the YAML
    through logging (``train.log``), so a batch system's log says what ran."""
    console = console or Console()
    if not console.is_terminal:
        log.info("config:\n%s", _yaml(cfg))
        return
    tree = Tree("config", guide_style="dim")
    written = OmegaConf.to_container(cfg)  # a value as written: ??? or an interpolation shows as such
    for key, value in written.items():
        text = _yaml(cfg[key]) if isinstance(value, dict) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark"))
    console.print(tree)


def _yaml(cfg: DictConfig) -> str:
    """Resolved where it can be; a value left to fill (???) or a broken interpolation shows as written
    (the config check names it next)."""
    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_yaml(cfg)

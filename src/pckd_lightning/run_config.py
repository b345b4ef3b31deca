"""Reading the resolved ``config.yaml`` a run leaves in its folder (for evaluation and reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_run_config(path: str | Path) -> dict[str, Any] | None:
    """The run config as a dict, or None when the file is missing, unreadable or not a run's config."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), dict) for k in ("trainer", "model")):
        return None
    return cfg

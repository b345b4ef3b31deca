"""OmegaConf resolvers the configs use; light to import, so ``pckd-train`` registers them before composing."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from omegaconf import OmegaConf

from pckd_lightning.paths import CONFIG_DIR

#: names one launch of ``pckd-train``; set by the first process, inherited by its DDP ranks and sweep workers
LAUNCH_ID_ENV = "PCKD_LAUNCH_ID"


def launch_id() -> str:
    """``<date>_<time>_<6 hex>``: two launches in the same second (a shell loop, a job array) differ."""
    if LAUNCH_ID_ENV not in os.environ:
        os.environ[LAUNCH_ID_ENV] = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    return os.environ[LAUNCH_ID_ENV]


def run_dir(runs_root: str, ckpt_path: str | None = None) -> str:
    """A run's folder: a resumed run continues in its checkpoint's run folder, a new run gets its own."""
    if ckpt_path:
        checkpoint = Path(ckpt_path).expanduser().resolve()
        if checkpoint.parent.name == "checkpoints":
            return str(checkpoint.parent.parent)
    return str(Path(runs_root) / launch_id())


def catalog(group: str) -> str:
    """``name  description`` per option of a config group: the first comment line of each file (for --help)."""
    lines = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml"), key=lambda p: p.stem.lower()):
        comments = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
        text = next((c for c in comments if not c.startswith("@package")), "")
        lines.append(f"  {path.stem:<34} {text}")
    return "\n".join(lines)


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("pckd.run_dir"):
        OmegaConf.register_new_resolver("pckd.run_dir", run_dir)
    if not OmegaConf.has_resolver("pckd.catalog"):
        OmegaConf.register_new_resolver("pckd.catalog", catalog)

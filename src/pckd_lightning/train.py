"""``pckd-train``: the Hydra command-line entry point (configs in the repository's ``conf/``)."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from pckd_lightning.reporting import print_summary
from pckd_lightning.runner import fit

CONFIG_DIR = Path(os.environ.get("PCKD_CONFIG_DIR", Path(__file__).resolve().parents[2] / "conf"))


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train (or distill) as the config says, print the summary; returns best top-1 for sweepers."""
    summary = fit(cfg)
    if rank_zero_only.rank == 0:
        print_summary(summary)
    return summary["best_top1"]


if __name__ == "__main__":
    main()

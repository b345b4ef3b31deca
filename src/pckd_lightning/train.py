"""``pckd-train``: the Hydra command-line entry point (configs in the repository's ``conf/``).

Lightning and torch are imported only once Hydra has composed the config, so ``--help``, ``--cfg`` and
tab completion answer in about a second. The library's own errors (bad config values, data, checkpoints)
print as one message and exit 2 (in a multirun they fail their job only); ``HYDRA_FULL_ERROR=1`` shows the
traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pckd_lightning.errors import PCKDError
from pckd_lightning.paths import CONFIG_DIR

log = logging.getLogger("pckd_lightning.train")


def _to_log_files(level: int, message: str) -> None:
    """Record ``message`` in the run's log file (train.log) only: the console gets it once, on stderr."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train (or distill) as the config says, print the summary; returns best top-1 for sweepers."""
    from lightning.pytorch.utilities import rank_zero_only

    from pckd_lightning.console import print_config_tree, print_summary
    from pckd_lightning.runner import fit

    if rank_zero_only.rank == 0 and cfg.get("print_config", True):
        print_config_tree(cfg)
    try:
        summary = fit(cfg)
    except PCKDError as err:
        # in a multirun the sweep goes on: Hydra records the job as failed (a diverged Optuna trial, say)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        _to_log_files(logging.ERROR, f"{type(err).__name__}: {err}")
        print(f"pckd-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if rank_zero_only.rank == 0:
        print_summary(summary)
    return summary["best_top1"]


if __name__ == "__main__":
    main()

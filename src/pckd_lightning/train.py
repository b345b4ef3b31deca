"""``pckd-train``: the Hydra command-line entry point (configs in the repository's ``conf/``).

Lightning and torch are imported only once Hydra has composed the config, so ``--help``, ``--cfg`` and
tab completion answer in about a second. The library's own errors (bad config values, data, checkpoints) and
Hydra's before the run starts (a misspelt option or key, an unwritable run folder, clashing flags) print as
one line and exit 2 (in a multirun a job's error fails its job only); ``HYDRA_FULL_ERROR=1`` shows the
traceback. A run refused before any work leaves no run folder behind.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig

from pckd_lightning.errors import PCKDError
from pckd_lightning.paths import CONFIG_DIR
from pckd_lightning.run_folder import remove_if_unused, unwritable
from pckd_lightning.upgrades import upgrade_overrides

log = logging.getLogger("pckd_lightning.train")

#: set by :func:`main`, with ``HYDRA_FULL_ERROR=1``, while Hydra composes the config and makes the run folder:
#: Hydra then raises its errors to :func:`main` instead of printing a traceback; the run unsets both as it starts
STARTING_ENV = "PCKD_STARTING"


def _to_log_files(level: int, message: str) -> None:
    """Record ``message`` in the run's log file (train.log) only: the console gets it once, on stderr."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in _log_files():
        handler.handle(record)


def _log_files() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _started() -> None:
    """From here on the run reports its own errors, and Hydra its job's, as without :func:`main`'s wrapping
    (DDP ranks and sweep workers started later must not inherit the setting)."""
    if os.environ.pop(STARTING_ENV, None) is not None:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def _discard_run_folder() -> bool:
    """Delete the run folder if the refused run left nothing in it but Hydra's files and its log."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    logs = {Path(h.baseFilename).name for h in _log_files() if Path(h.baseFilename).parent == output_dir}
    return remove_if_unused(output_dir, hydra_cfg.output_subdir, logs)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """Train (or distill) as the config says, print the summary; returns best top-1 for sweepers."""
    _started()
    from lightning.pytorch.utilities import rank_zero_only

    from pckd_lightning.console import print_config_tree, print_summary
    from pckd_lightning.run import check_config, fit
    from pckd_lightning.schema.config import validate

    try:
        validate(cfg)  # before the config is printed, so that an error is not buried under it
        check_config(cfg)
        if rank_zero_only.rank == 0 and cfg.get("print_config", True):
            print_config_tree(cfg)
        summary = fit(cfg)
    except PCKDError as err:
        # in a multirun the sweep goes on: Hydra records the job as failed (a diverged Optuna trial, say), and
        # the job's folder keeps its train.log with the reason
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        if rank_zero_only.rank != 0 or not _discard_run_folder():
            _to_log_files(logging.ERROR, f"{type(err).__name__}: {err}")
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"pckd-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if rank_zero_only.rank == 0:
        print_summary(summary)
    return summary["best_top1"]


def main() -> None:
    """``pckd-train``: :func:`train` through Hydra, with Hydra's errors before the run as one line, exit 2.

    Overrides of earlier spellings are renamed first (with a warning), so DDP ranks inherit the new ones.
    """
    sys.argv[1:] = upgrade_overrides(sys.argv[1:])
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and STARTING_ENV not in os.environ:
        train()  # the user asked for Hydra's tracebacks
        return
    os.environ.update({"HYDRA_FULL_ERROR": "1", STARTING_ENV: "1"})
    try:
        train()
    except (HydraException, OSError, ValueError) as err:
        if STARTING_ENV not in os.environ:  # raised by the run, which has reported its own errors
            raise
        print(f"pckd-train: error: {startup_error(err, sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _started()


def startup_error(err: Exception, argv: list[str]) -> str:
    """What Hydra refused before the run started, on one line, with the fix."""
    multirun = "-m" in argv or "--multirun" in argv
    if isinstance(err, MissingConfigException) and err.options and "/" in (err.missing_cfg_file or ""):
        group, _, option = err.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(option, err.options, n=3, cutoff=0.5)
        offer = f"did you mean {', '.join(close)}?" if close else f"the options are {', '.join(err.options)}"
        return f"{group}={option} is not an option of {group}: {offer} (pckd-train --help describes them)"
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(err, ConfigCompositionException) and key and "not in struct" in str(cause):
        if multirun:
            fix = (
                "give the data folder as paths.data_dir=<folder> (every data set's root follows it)"
                if key == "data.root"
                else f"select {key.split('.')[0]}=<option> outside the sweep, or force the key with ++{key}=<value>"
            )
            return (
                f"{key} is not a key of the sweep's base config (the defaults with the overrides that are not "
                f"swept: Hydra checks every key against it before it expands the sweep); {fix}"
            )
        groups = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())
        group, _, leaf = key.partition(".")
        if group in groups and leaf:
            return (
                f"{key} is not a key of the config: the chosen {group} has no {leaf}; check the spelling "
                f"(pckd-train --cfg job prints every key), or choose the {group} that has it ({group}=<option>)"
            )
        close = difflib.get_close_matches(key, groups, n=3) if not leaf else []
        hint = f" (config groups: did you mean {', '.join(close)}?)" if close else ""
        return (
            f"{key} is not a key of the config{hint}: check its spelling (pckd-train --cfg job prints every "
            f"key), or add a new key with +{key}=<value>"
        )
    if isinstance(err, OSError) and not isinstance(err, HydraException) and err.filename:
        return str(unwritable(err.filename, err))
    if (
        isinstance(err, ValueError)
        and multirun
        and any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in argv)
    ):
        return (
            "--cfg prints the config of one run, so it cannot be combined with -m (--multirun): drop -m and "
            "give every swept key one value (e.g. distill=kd rather than distill=kd,pckd)"
        )
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if cause is not None:
        lines.append(str(cause).strip().splitlines()[0])
    return " ".join(lines)


if __name__ == "__main__":
    main()

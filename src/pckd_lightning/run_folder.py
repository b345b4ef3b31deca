"""A run's folder: one live run per folder (a lock file with the owner's pid, taken before any work and checked
for write access), no folder left by a run refused before any work, and the resolved ``config.yaml`` the run
leaves there (read by evaluation and reports)."""

from __future__ import annotations

import copy
import errno
import logging
import os
import re
import shutil
import socket
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from pckd_lightning.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".pckd.lock"
#: a run folder needs room for checkpoints, logs and the student's weights
MIN_FREE_BYTES = 64 * 2**20


def _slurm_job() -> str:
    """The Slurm job this process belongs to (kept by a requeue, whatever node it lands on), or ``-``."""
    return os.environ.get("SLURM_JOB_ID", "-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def unwritable(path: str | Path, err: OSError) -> ConfigError:
    """The error for a run folder that cannot be created or written, saying where to put the run instead."""
    reason = "it is full" if err.errno == errno.ENOSPC else f"it is not writable ({err.strerror})"
    return ConfigError(
        f"cannot write the run folder {path}: {reason}; choose another with paths.log_dir=<folder> (or "
        "hydra.run.dir=<folder>, hydra.sweep.dir in a sweep), or free space / fix its permissions"
    )


class RunFolder:
    """Context manager: creates ``path``, refuses it when unwritable, full, or held by another live run.

    The lock holds ``<pid> <host> <Slurm job>``; a lock whose process is gone (a killed run), or that the same
    Slurm job left before it was requeued, is taken over: that is how a run resumes in its own folder. Only
    one process per run takes it (rank 0 under DDP).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = self.path / LOCK_NAME
        self._held = False

    def __enter__(self) -> RunFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"\0" * 4096)
            probe.unlink()
        except OSError as err:
            raise unwritable(self.path, err) from None
        free = shutil.disk_usage(self.path).free
        if free < MIN_FREE_BYTES:
            raise ConfigError(
                f"the run folder {self.path} has only {free / 2**20:.0f} MiB free (at least "
                f"{MIN_FREE_BYTES // 2**20} MiB needed for checkpoints and logs); free space or set paths.log_dir"
            )
        self._acquire()
        return self

    def _acquire(self) -> None:
        record = f"{os.getpid()} {socket.gethostname()} {_slurm_job()}\n"
        while True:
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host, job = self._owner()
                elsewhere = host is not None and host != socket.gethostname()
                requeued = job not in (None, "-") and job == _slurm_job()  # this job's earlier incarnation
                if pid is not None and pid != os.getpid() and not requeued and (elsewhere or _alive(pid)):
                    raise ConfigError(
                        f"the run folder {self.path} is in use by another live run (pid {pid} on {host}; lock "
                        f"file {self.lock}); wait for it, or give this run its own folder (drop hydra.run.dir, "
                        "or set another one). If that run has ended, delete the lock file."
                    ) from None
                self.lock.unlink(missing_ok=True)  # stale: its run was killed
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held = True
            return

    def _owner(self) -> tuple[int | None, str | None, str | None]:
        """The lock's pid, host and Slurm job; Nones when it cannot be read (then it is taken over)."""
        try:
            pid, host, *job = self.lock.read_text().split()
            return int(pid), host, job[0] if job else None
        except (OSError, ValueError):
            return None, None, None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._held and self._owner()[0] == os.getpid():
            self.lock.unlink(missing_ok=True)
        self._held = False


#: what Hydra writes into its subfolder (``.hydra``) of a run folder before the run starts
HYDRA_RECORD = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


def remove_if_unused(path: str | Path, hydra_subdir: str | None, log_files: Collection[str]) -> bool:
    """Delete a run folder that a run refused before any work left behind, so that typos leave no litter.

    Only a folder holding nothing but Hydra's record of the config (``hydra_subdir``) and the run's log files
    goes; anything else (a checkpoint, a CSV history, a summary, ``config.yaml``, a file of the user's) keeps
    the whole folder untouched, as a resumed run's folder must stay. Returns whether it was deleted.
    """
    path = Path(path)

    def hydra_own(entry: Path) -> bool:
        if entry.is_symlink():
            return False
        if entry.name == hydra_subdir and entry.is_dir():
            return all(f.name in HYDRA_RECORD and f.is_file() for f in entry.iterdir())
        return entry.name in log_files and entry.is_file()

    if not path.is_dir() or not all(hydra_own(entry) for entry in path.iterdir()):
        return False
    shutil.rmtree(path)
    return True


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
    return upgrade_config(cfg)


def upgrade_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config as this version writes it, whichever version wrote it, so that a checkpoint or a
    run folder of an earlier version compares equal to the same run now (resume, pckd-report).

    The preview weights' keys are :func:`pckd_lightning.preview.upgrade`'s; a config without the ``module``
    group gets the keys that group mirrors; :func:`upgrade_settings_homes` moves what had two homes.
    """
    from pckd_lightning import preview  # only when upgrading

    cfg = copy.deepcopy(cfg)
    distill = cfg.get("distill")
    if isinstance(distill, dict):
        preview.upgrade(distill)
    if "module" not in cfg:
        cfg["module"] = {
            "lr_scaling": cfg.get("lr_scaling", "none"),
            "preview": (distill or {}).get("preview") if isinstance(distill, dict) else None,
            "sync_batchnorm": (cfg.get("trainer") or {}).get("sync_batchnorm", False),
        }
    upgrade_settings_homes(cfg)
    return cfg


#: the module's settings that were top-level blocks (and module.<new> pointed at them), by their earlier key
MODULE_SETTINGS = {"performance": "performance", "teacher": "teacher_options", "lr_scaling": "lr_scaling"}
#: the per-pair settings that earlier model configs held for the methods and the recipe to read: now tables
#: there (``pckd.by_pair``), whose chosen values the terms and the optimizer hold
PAIR_SETTINGS = ("dkd_beta", "ls_temperature", "ls_kd_weight", "lr")


def upgrade_settings_homes(cfg: dict[str, Any]) -> None:
    """A config written before each setting had one home (issue 25; up to main 5ca28de), in place: the module's
    settings move from the top level and ``trainer.sync_batchnorm`` into ``module``, the model's per-pair
    settings go (:data:`PAIR_SETTINGS`) and ``module.preview`` is again a copy of ``distill.preview``."""
    module = cfg.setdefault("module", {})
    for old, new in MODULE_SETTINGS.items():
        if old in cfg:
            module[new] = cfg.pop(old)
    trainer = cfg.get("trainer")
    if isinstance(trainer, dict) and "sync_batchnorm" in trainer:
        module["sync_batchnorm"] = trainer.pop("sync_batchnorm")
    model = cfg.get("model")
    if isinstance(model, dict):
        for key in PAIR_SETTINGS:
            model.pop(key, None)
    distill = cfg.get("distill")
    if "preview" in module and isinstance(distill, dict):
        module["preview"] = copy.deepcopy(distill.get("preview"))


#: command-line spellings of earlier versions (a key, a section or a config group) and where they live now
RENAMED_OVERRIDES = {
    "distill/preview": "preview@distill.preview",
    "lr_scaling": "module.lr_scaling",
    "performance": "module.performance",
    "teacher": "module.teacher_options",
    "trainer.sync_batchnorm": "module.sync_batchnorm",
}
#: a command-line override: Hydra's prefix (+, ++, ~), its key or config group, and the rest (=value)
OVERRIDE = re.compile(r"^([+~]*)([\w./@-]+)(=.*)?$", re.S)


def upgrade_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides as this version spells them: an earlier spelling (:data:`RENAMED_OVERRIDES`, or a
    key below a renamed section) is renamed, with a warning naming the new one, so that old commands still run.
    Its new home always exists, so an adding ``+`` becomes a plain override."""
    upgraded = []
    for override in overrides:
        match = OVERRIDE.match(override)
        prefix, key, rest = match.groups() if match else ("", "", None)
        for old, new in RENAMED_OVERRIDES.items():
            if key == old or key.startswith(f"{old}."):
                renamed = f"{'' if prefix == '+' else prefix}{new}{key[len(old) :]}{rest or ''}"
                log.warning("%s is spelt %s now; the old spelling still works, for now", override, renamed)
                override = renamed
                break
        upgraded.append(override)
    return upgraded

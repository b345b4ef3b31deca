"""Finding run folders below a directory and reading what ``pckd-train`` wrote into them.

A *run folder* is any folder (searched recursively, hidden folders such as ``.hydra`` skipped) that holds a
``summary.json``, or a ``config.yaml`` shaped like a resolved training config (it has ``trainer``,
``model`` and ``distill`` sections) but no ``summary.json``: the latter is a run that is still going,
crashed or was killed. Only local files are read.

A run is *complete* when its summary is readable, its best and last top-1 are finite numbers, it trained
for ``trainer.max_epochs`` epochs (from the run's ``config.yaml``), it was not interrupted, it is not a
``fast_dev_run`` smoke test, and its ``config.yaml``, ``summary.json`` and last checkpoint belong to the
same run (the config's SHA-256 that the summary and the checkpoint record). Every other run is kept with
``status="incomplete"`` and the reason, so that the report can list it without averaging it in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pckd_lightning.callbacks.config_record import STATE_KEY
from pckd_lightning.resume import experiment_config, flatten_config
from pckd_lightning.run_folder import read_run_config

SUMMARY = "summary.json"
CONFIG = "config.yaml"
METRICS = Path("csv") / "metrics.csv"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
UNREADABLE = "unreadable"
#: the run's seed, and the data module's copy of it: what differs between the seeds of one experiment
SEED_KEYS = ("seed", "data.seed")
#: Lightning's options that train or evaluate on part of each epoch (float: a fraction, int: a batch count)
PARTIAL_EPOCHS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches")
#: the method name of plain supervised training; such runs fill the "student (scratch)" row
SCRATCH_METHOD = "ce"

COMPLETE = "complete"
INCOMPLETE = "incomplete"
SUPERSEDED = "superseded"


@dataclass
class RunRecord:
    """One run folder: what its summary and config say, and whether it counts."""

    run_dir: Path
    status: str = COMPLETE
    reason: str = ""
    method: str | None = None
    student: str | None = None
    teacher: str | None = None
    dataset: str = "unknown"
    seed: int | None = None
    epochs: int | None = None
    max_epochs: int | None = None
    teacher_top1: float | None = None
    best_top1: float | None = None
    last_top1: float | None = None
    last_top5: float | None = None
    terms: dict[str, float] = field(default_factory=dict)
    #: the distillation settings that tell variants of one method apart (see :func:`distill_settings`)
    settings: dict[str, Any] = field(default_factory=dict)
    teacher_checkpoint: str | None = None
    #: validation top-1 in percent per epoch, from csv/metrics.csv (empty when there is no CSV log)
    curve: dict[int, float] = field(default_factory=dict)
    #: GradientShare's values (``grad/<term>/norm``, ``head_norm``, ``cos_ce``) per training step, if logged
    gradients: dict[str, dict[int, float]] = field(default_factory=dict)
    mtime: float = 0.0
    #: the row label in the report; set by :func:`pckd_lightning.report.aggregate.label_variants`
    label: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def is_scratch(self) -> bool:
        return self.method == SCRATCH_METHOD


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if SUMMARY in filenames or CONFIG in filenames:
            yield Path(dirpath)


def dataset_name(cfg: dict[str, Any] | None) -> str:
    """A short data set name from the run config's ``data._target_`` (``digits``, ``cifar100``, ...), with
    the subsampling when there is any (``cifar100 (subsampled: 20 classes, 150 train/class, 50 val/class)``):
    a subsampled run is never read as a full-data result."""
    data = (cfg or {}).get("data") or {}
    target = str(data.get("_target_") or "")
    if not target:
        return "unknown"
    name = target.rsplit(".", 1)[-1].removesuffix("DataModule").removeprefix("GPUResident").lower()
    if name == "imagefolder" and data.get("root"):
        name = f"imagefolder:{Path(str(data['root'])).name}"
    subset = [
        f"{data['class_subset']} classes" if data.get("class_subset") else None,
        f"{data['train_per_class']} train/class" if data.get("train_per_class") else None,
        f"{data['val_per_class']} val/class" if data.get("val_per_class") else None,
    ]
    subset = [part for part in subset if part]
    if subset:
        name = f"{name} (subsampled: {', '.join(subset)})"
    trainer = (cfg or {}).get("trainer") or {}
    partial = [f"{key}={trainer[key]}" for key in PARTIAL_EPOCHS if not _whole(key, trainer.get(key))]
    if partial:  # a debug run (debug=limit, overfit_batches): never read as, or averaged with, a result
        name = f"{name} [partial epochs: {', '.join(partial)}]"
    # validated on held-out training images: a tuning run, not a result on the evaluation split
    return f"{name} [holdout val]" if data.get("val_source") == "holdout" else name


def _whole(key: str, value: Any) -> bool:
    """Whether a ``trainer`` option of :data:`PARTIAL_EPOCHS` leaves every batch in (its default)."""
    if key == "overfit_batches":
        return value in (None, 0, 0.0)
    return value is None or (isinstance(value, float) and value == 1.0)  # an int counts batches: 1 is one


def distill_settings(cfg: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's ``distill`` section flattened (``terms.kd.weight`` -> 0.9, ``views`` -> 1, ...).

    Terms set to null or to weight 0 are left out (the runner drops them), as are ``name`` and the
    ``_target_`` class paths. Without a config, the summary's active terms and weights stand in (terms the
    runner skipped for the pair are kept, as configured terms).
    """
    out: dict[str, Any] = {}
    distill = (cfg or {}).get("distill")
    if isinstance(distill, dict):
        distill = dict(distill)
        distill.pop("name", None)
        terms = distill.pop("terms", None) or {}
        out |= flatten_config(distill)
        for name, term in terms.items():
            if not isinstance(term, dict) or term.get("weight", 1.0) == 0:
                continue
            out |= flatten_config({"weight": 1.0, **term}, f"terms.{name}")
        return {k: v for k, v in out.items() if not k.endswith("_target_")}
    for name, weight in (summary.get("terms") or {}).items():
        out[f"terms.{name}.weight"] = weight
    for name in summary.get("skipped_terms") or {}:
        out.setdefault(f"terms.{name}.weight", "skipped")
    return out


def _number(value: Any) -> float | None:
    """A float, or None for null; NaN for anything that is not a number (so it counts as non-finite)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(text: str | None) -> float | None:
    """A CSV cell as a finite float, or None (empty, not a number, or not finite)."""
    value = _number(text or None)
    return value if value is not None and math.isfinite(value) else None


def read_log(run_dir: Path) -> tuple[dict[int, float], dict[str, dict[int, float]]]:
    """From the run's CSV log: ``val/top1`` per epoch in percent (the last value logged for an epoch wins)
    and each ``grad/*`` value per training step. Empty when there is no readable log."""
    path = run_dir / METRICS
    curve: dict[int, float] = {}
    gradients: dict[str, dict[int, float]] = {}
    if not path.is_file():
        return curve, gradients
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                epoch, step, top1 = (_finite(row.get(k)) for k in ("epoch", "step", "val/top1"))
                if top1 is not None and epoch is not None:
                    curve[int(epoch)] = top1
                for key, value in row.items():
                    grad = key and key.startswith("grad/") and step is not None
                    if grad and (number := _finite(value)) is not None:
                        gradients.setdefault(key, {})[int(step)] = number
    except (OSError, csv.Error):
        return {}, {}
    return dict(sorted(curve.items())), {k: dict(sorted(v.items())) for k, v in sorted(gradients.items())}


def read_run(run_dir: Path) -> RunRecord | None:
    """Read one folder; None when it is neither a run with a summary nor a run config."""
    cfg = read_run_config(run_dir / CONFIG)
    summary_path = run_dir / SUMMARY
    record = RunRecord(run_dir=run_dir, dataset=dataset_name(cfg))
    if cfg is not None:
        trainer = cfg.get("trainer") or {}
        max_epochs = trainer.get("max_epochs")
        record.max_epochs = int(max_epochs) if isinstance(max_epochs, int) and max_epochs > 0 else None
        model = cfg.get("model") or {}
        record.student = (model.get("student") or {}).get("name")
        teacher = model.get("teacher") or {}
        record.teacher = teacher.get("name")
        record.teacher_checkpoint = teacher.get("checkpoint")
        record.method = (cfg.get("distill") or {}).get("name")
        record.seed = cfg.get("seed")
    if not summary_path.is_file():
        if cfg is None or not isinstance(cfg.get("distill"), dict):
            return None  # some other config.yaml (e.g. a logger's), not a run folder
        record.status, record.reason = INCOMPLETE, "no summary.json (still running, crashed or killed)"
        return record
    record.mtime = summary_path.stat().st_mtime
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as err:
        record.status, record.reason = INCOMPLETE, f"summary.json unreadable ({type(err).__name__})"
        return record
    if not isinstance(summary, dict):
        record.status, record.reason = INCOMPLETE, "summary.json is not a JSON object"
        return record

    record.method = summary.get("method", record.method) or "unknown"
    record.student = summary.get("student", record.student)
    record.teacher = summary.get("teacher", record.teacher)
    record.seed = summary.get("seed", record.seed)
    epochs = summary.get("epochs")
    record.epochs = epochs if isinstance(epochs, int) else None
    record.terms = {str(k): float(v) for k, v in (summary.get("terms") or {}).items() if _finite_or_none(v)}
    record.settings = distill_settings(cfg, summary)
    if record.max_epochs is not None:  # a 10-epoch and a 240-epoch schedule are not the same experiment
        record.settings["trainer.max_epochs"] = record.max_epochs
    if cfg is not None:  # runs of another optimizer, schedule, data or precision are other experiments
        record.settings |= {
            k: v
            for k, v in experiment_config(cfg).items()
            if not k.startswith(("distill.", "module.", "model.")) and k not in SEED_KEYS
        }
    for key in ("teacher_top1", "best_top1", "last_top1", "last_top5"):
        setattr(record, key, _number(summary.get(key)))
    record.curve, record.gradients = read_log(run_dir)

    problems = []
    for key in ("best_top1", "last_top1"):
        value = getattr(record, key)
        if value is None:
            problems.append(f"{key} missing")
        elif not math.isfinite(value):
            problems.append(f"{key} is not finite ({summary.get(key)!r})")
    for key in ("teacher_top1", "last_top5"):
        value = getattr(record, key)
        if value is not None and not math.isfinite(value):
            problems.append(f"{key} is not finite ({summary.get(key)!r})")
    if cfg is not None and (cfg.get("trainer") or {}).get("fast_dev_run"):
        problems.append("fast_dev_run (a smoke test, not a result)")
    if summary.get("status", COMPLETE) != COMPLETE:
        how = summary.get("interrupted_by") or summary["status"]
        problems.append(f"interrupted ({how}); resume it with ckpt_path={summary.get('resume_checkpoint')}")
    problems += ownership_problems(run_dir, summary)
    if record.epochs is None:
        problems.append("epochs missing from summary.json")
    elif record.max_epochs is not None and record.epochs < record.max_epochs:
        problems.append(f"stopped after {record.epochs} of {record.max_epochs} epochs")
    if problems:
        record.status, record.reason = INCOMPLETE, "; ".join(problems)
    elif cfg is None:
        record.reason = "no config.yaml: epoch count and data set not checked"
    return record


def ownership_problems(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Whether config.yaml, summary.json and the last checkpoint were written by the same run.

    Two runs sharing a folder leave one run's config beside the other's results; each file records the
    SHA-256 of the config.yaml text its run wrote, so a mixed folder is caught here.
    """
    expected = summary.get("config_sha256")
    config = run_dir / CONFIG
    if expected is None or not config.is_file():
        return []  # written before the hash was recorded: nothing to compare
    problems = []
    config_sha = hashlib.sha256(config.read_bytes()).hexdigest()
    if config_sha != expected:
        problems.append("config.yaml was written by another run than summary.json (a shared folder)")
    saved = _checkpoint_config_sha(run_dir / LAST_CHECKPOINT)
    if saved == UNREADABLE:
        problems.append("checkpoints/last.ckpt cannot be read")
    elif saved is not None and saved != config_sha:
        problems.append("checkpoints/last.ckpt was written by another run than config.yaml (a shared folder)")
    return problems


def _checkpoint_config_sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    import torch  # only for folders that have a checkpoint

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # truncated or not a torch file: one meaning here
        return UNREADABLE
    return ((checkpoint.get("callbacks") or {}).get(STATE_KEY) or {}).get("sha256")


def _finite_or_none(value: Any) -> bool:
    number = _number(value)
    return number is not None and math.isfinite(number)


def settings_key(settings: dict[str, Any]) -> tuple:
    """A hashable, sortable form of :attr:`RunRecord.settings`."""
    return tuple(sorted((k, repr(v)) for k, v in settings.items()))


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder below ``root`` (``root`` itself included), sorted by path.

    Complete runs that repeat another complete run's (data set, teacher, student, method, distillation
    settings, seed) are marked ``superseded``, except the newest (by ``summary.json``'s modification time),
    so that a rerun of a seed is not averaged in twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    records = [r for d in _walk(root) if (r := read_run(d)) is not None]
    newest: dict[tuple, RunRecord] = {}
    for record in sorted((r for r in records if r.complete), key=lambda r: r.mtime):
        key = (
            record.dataset,
            record.teacher,
            record.student,
            record.method,
            settings_key(record.settings),
            record.seed,
        )
        if key in newest:
            old = newest[key]
            old.status, old.reason = SUPERSEDED, f"same setting and seed as the newer run {record.run_dir}"
        newest[key] = record
    return sorted(records, key=lambda r: str(r.run_dir))

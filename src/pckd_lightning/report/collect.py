"""Finding run folders below a directory and reading what ``pckd-train`` wrote into them.

A *run folder* is any folder (searched recursively, hidden folders such as ``.hydra`` skipped) that holds a
``summary.json``, or a ``config.yaml`` shaped like a resolved training config (it has ``trainer``,
``model`` and ``distill`` sections) but no ``summary.json``: the latter is a run that is still going,
crashed or was killed. Only local files are read.

A run is *complete* when its summary is readable, its best and last top-1 are finite numbers, it trained
for ``trainer.max_epochs`` epochs (from the run's ``config.yaml``), its last validation was at its final
epoch (``last_top1_epoch``, where recorded), it was not interrupted, it is not a ``fast_dev_run`` smoke
test, and its ``config.yaml``, ``summary.json`` and last checkpoint belong to the same run (the config's
SHA-256 that the summary and the checkpoint record). Every other run is kept with ``status="incomplete"``
and the reason, so that the report can list it without averaging it in. A from-scratch run that trained a
teacher other runs distilled from (the demo's ``<run>/teacher/``, compare.py's ``teachers/<arch>``) gets
``status="teacher"``: it is listed with its teacher, never as a result.

Two runs are one row (averaged together, and a rerun of a seed supersedes the older one) only when
:func:`row_key` agrees: data set, teacher architecture and teacher file (SHA-256), student, method, every
setting of :attr:`RunRecord.settings` (numbers compared by value: 4 and 4.0 are equal, booleans stay
booleans) and how the run was resumed. Only the seed may differ.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pckd_lightning.callbacks.config_record import STATE_KEY
from pckd_lightning.data.classes import parse_classes
from pckd_lightning.distillation.teacher import file_sha256
from pckd_lightning.errors import ConfigError
from pckd_lightning.resume import RECORDED, experiment_config, flatten_config, recorded_value
from pckd_lightning.run_folder import read_run_config
from pckd_lightning.schema.fields import Bool, accepts

SUMMARY = "summary.json"
CONFIG = "config.yaml"
METRICS = Path("csv") / "metrics.csv"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
UNREADABLE = "unreadable"
#: the run's seed, the data module's copy of it and the augmentation stream's (a seed too where it follows the
#: run's seed, the default): what differs between the seeds of one experiment. A stream shared by a whole sweep
#: (summary ``aug_stream``) is a setting (:func:`shared_aug_seed`)
SEED_KEYS = ("seed", "data.seed", "data.aug_seed")
#: the setting a sweep that shared one augmentation stream has (:func:`shared_aug_seed`); a run without it drew
#: its own stream from its seed, which a label shows as ``data.aug_seed=seed``
AUG_SEED = "data.aug_seed"
#: how a label shows a setting that a run leaves out, where that is not ``None``
UNSET_LABELS = {AUG_SEED: "seed"}
#: Lightning's options that train or evaluate on part of each epoch (float: a fraction, int: a batch count)
PARTIAL_EPOCHS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches")
#: the method name of plain supervised training; such runs fill the "student (scratch)" row
SCRATCH_METHOD = "ce"
#: the setting of :data:`~pckd_lightning.resume.RECORDED` that only a run with a teacher has
TEACHER_PRECISION = "module.teacher_options.float32"
#: ``experiment_config`` keys that are no setting of their own: the distill section (read by
#: :func:`distill_settings`), the architectures (the report's columns) and the demo's recipe for a missing
#: teacher (the teacher file's SHA-256 says which teacher was used)
NOT_SETTINGS = (
    "distill.",
    "model.student.name",
    "model.teacher.name",
    "model.train_teacher_if_missing.",
)
#: the folder the demo trains a missing teacher into, inside the distillation run's folder
NESTED_TEACHER = "teacher"

COMPLETE = "complete"
INCOMPLETE = "incomplete"
SUPERSEDED = "superseded"
TEACHER = "teacher"


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
    #: the final student on the evaluation split, for runs validated on a holdout (``data.val_source=holdout``)
    test_top1: float | None = None
    test_top5: float | None = None
    terms: dict[str, float] = field(default_factory=dict)
    #: every setting but the seed, flattened, numbers normalized (see :func:`row_key`)
    settings: dict[str, Any] = field(default_factory=dict)
    teacher_checkpoint: str | None = None
    #: SHA-256 of the teacher file the run loaded (summary ``teacher_sha256``; None before it was recorded)
    teacher_sha256: str | None = None
    #: how a resume changed the run ("" for a run trained in one go or resumed unchanged)
    resume_note: str = ""
    #: the git commit of the code that ran it, "+dirty" when tracked files differed (summary ``code``; None:
    #: not recorded, or not run from a git checkout)
    code_commit: str | None = None
    #: where the run wrote its student (summary ``student_weights``): a teacher run's file, by path
    student_weights: str | None = None
    #: for a teacher's training run: the teacher it trained (:attr:`teacher_id` of the runs distilled from it)
    trained_teacher: str | None = None
    #: validation top-1 in percent per epoch, from csv/metrics.csv (empty when there is no CSV log)
    curve: dict[int, float] = field(default_factory=dict)
    #: GradientShare's values (``grad/<term>/norm``, ``head_norm``, ``cos_ce``) per training step, if logged
    gradients: dict[str, dict[int, float]] = field(default_factory=dict)
    #: when the run finished (summary ``finished_at``, else the file's modification time), in epoch seconds
    finished: float = 0.0
    #: whether ``finished`` is the summary's own ``finished_at``
    finished_at_known: bool = False
    #: the row label in the report; set by :func:`pckd_lightning.report.aggregate.label_variants`
    label: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def is_scratch(self) -> bool:
        return self.method == SCRATCH_METHOD

    @property
    def teacher_id(self) -> str | None:
        """The teacher file: its SHA-256 where recorded, else its path (older runs); None without a teacher."""
        if self.teacher is None:
            return None
        return self.teacher_sha256 or self.teacher_checkpoint


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if SUMMARY in filenames or CONFIG in filenames:
            yield Path(dirpath)


def _classes_text(value: Any) -> str | None:
    """``data.classes`` as the report names it: ``classes 20-39`` for a run of ids, else the ids in order."""
    if value is None:
        return None
    try:
        ids = parse_classes(value)
    except ConfigError:
        return f"classes {value}"
    if list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return f"classes {ids[0]}-{ids[-1]}"
    return f"classes {list(ids)}"


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
        _classes_text(data.get("classes")),
        f"{data['train_per_class']} train/class" if data.get("train_per_class") else None,
        f"{data['val_per_class']} val/class" if data.get("val_per_class") else None,
    ]
    subset = [part for part in subset if part]
    if subset:
        name = f"{name} (subsampled: {', '.join(subset)})"
    trainer = (cfg or {}).get("trainer") or {}
    partial = [
        f"{key}={trainer[key]}"
        for key in PARTIAL_EPOCHS
        if not _at_default(f"trainer.{key}", trainer.get(key))
    ]
    if partial:  # a debug run (debug=limit, overfit_batches): never read as, or averaged with, a result
        name = f"{name} [partial epochs: {', '.join(partial)}]"
    # validated on held-out training images: a tuning run, not a result on the evaluation split
    return f"{name} [holdout val]" if data.get("val_source") == "holdout" else name


def _at_default(key: str, value: Any) -> bool:
    """Whether a setting of :data:`~pckd_lightning.resume.RECORDED` leaves the run as the defaults train it."""
    return recorded_value(key, value) == recorded_value(key, None)


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
    if accepts(Bool, value):  # true or false is no number
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
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as err:
        record.status, record.reason = INCOMPLETE, f"summary.json unreadable ({type(err).__name__})"
        return record
    if not isinstance(summary, dict):
        record.status, record.reason = INCOMPLETE, "summary.json is not a JSON object"
        return record

    record.finished, record.finished_at_known = finished_time(summary, summary_path)
    record.method = summary.get("method", record.method) or "unknown"
    record.student = summary.get("student", record.student)
    record.teacher = summary.get("teacher", record.teacher)
    record.seed = summary.get("seed", record.seed)
    epochs = summary.get("epochs")
    record.epochs = epochs if isinstance(epochs, int) else None
    record.terms = {str(k): float(v) for k, v in (summary.get("terms") or {}).items() if _finite_or_none(v)}
    record.teacher_sha256 = summary.get("teacher_sha256")
    record.student_weights = summary.get("student_weights")
    record.resume_note = resume_note(summary)
    record.code_commit = code_commit(summary)
    if cfg is None:  # the epochs it trained are the only length known: a 10- and a 240-epoch run stay apart
        record.max_epochs = record.epochs
    settings = distill_settings(cfg, summary)
    if record.max_epochs is not None:  # a 10-epoch and a 240-epoch schedule are not the same experiment
        settings["trainer.max_epochs"] = record.max_epochs
    if cfg is not None:  # runs of another optimizer, schedule, data or precision are other experiments
        settings |= {
            k: v
            for k, v in experiment_config(cfg).items()
            if not k.startswith(NOT_SETTINGS) and k not in SEED_KEYS
        }
        settings |= result_settings(cfg, with_teacher=record.teacher is not None)
        if (shared := shared_aug_seed(cfg, summary)) is not None:
            settings[AUG_SEED] = shared
    record.settings = {k: normalized(v) for k, v in settings.items()}
    for key in ("teacher_top1", "best_top1", "last_top1", "last_top5", "test_top1", "test_top5"):
        setattr(record, key, _number(summary.get(key)))
    record.curve, record.gradients = read_log(run_dir)

    problems = []
    for key in ("best_top1", "last_top1"):
        value = getattr(record, key)
        if value is None:
            problems.append(f"{key} missing")
        elif not math.isfinite(value):
            problems.append(f"{key} is not finite ({summary.get(key)!r})")
    for key in ("teacher_top1", "last_top5", "test_top1", "test_top5"):
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
    last_epoch = summary.get("last_top1_epoch")  # absent in runs written before it was recorded
    if isinstance(last_epoch, int) and record.epochs is not None and last_epoch != record.epochs:
        problems.append(
            f"last validation at epoch {last_epoch} of {record.epochs}: last_top1 is not the final epoch's"
        )
    if problems:
        record.status, record.reason = INCOMPLETE, "; ".join(problems)
    elif cfg is None:
        record.reason = "no config.yaml: epoch count and data set not checked"
    return record


def result_settings(cfg: dict[str, Any], with_teacher: bool) -> dict[str, Any]:
    """The settings that change a result where not at their default, beyond what ``experiment_config`` gives:
    those a resume may change (:data:`~pckd_lightning.resume.RECORDED`: partial epochs, how often the run
    validated, with a teacher the teacher's precision)."""
    flat = flatten_config(cfg)
    return {
        key: flat[key]
        for key in RECORDED
        if (with_teacher or key != TEACHER_PRECISION) and not _at_default(key, flat.get(key))
    }


def normalized(value: Any) -> Any:
    """Numbers by value (an int-valued float becomes an int, so 4.0 equals 4; booleans stay booleans), also
    inside lists, so that settings compare by what they mean rather than how they were written."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equal settings after :func:`normalized`; by repr, so that True is not 1."""
    return repr(normalized(a)) == repr(normalized(b))


def format_value(value: Any) -> str:
    """A setting as labels show it: floats short (``:g``), the rest as ``str``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def code_commit(summary: dict[str, Any]) -> str | None:
    """The commit summary ``code`` records, marked ``+dirty`` when tracked files differed from it; a run
    resumed under other code lists each change of commit, in order (``abc→def``; ``?`` where one is unknown)."""
    codes = [s.get("code") for s in _segments(summary)] or [summary.get("code")]
    commits = [_commit(code) for code in codes]
    changes = [c for i, c in enumerate(commits) if i == 0 or c != commits[i - 1]]
    return "→".join(c or "?" for c in changes) if len(changes) > 1 else commits[0]


def _commit(code: Any) -> str | None:
    if not isinstance(code, dict) or not isinstance(code.get("commit"), str):
        return None
    return code["commit"] + ("+dirty" if code.get("dirty") else "")


def _segments(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """summary.json's training segments (a resumed run's history), or []."""
    segments = summary.get("segments")
    return [s for s in segments if isinstance(s, dict)] if isinstance(segments, list) else []


def finished_time(summary: dict[str, Any], path: Path) -> tuple[float, bool]:
    """When the run finished, and whether its summary said so: its ``finished_at`` (a copy or a checkout of
    banked runs keeps it), else ``path``'s modification time (summaries written before the field existed)."""
    stamp = summary.get("finished_at")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).timestamp(), True
        except ValueError:
            pass
    return path.stat().st_mtime, False


def resume_note(summary: dict[str, Any]) -> str:
    """How the run's resumes changed it (``resumed with changes: key=old→new``, every resume's, from
    ``segments``, else from ``resumed_from``), or that a config could not be checked; "" for a run trained in
    one go or resumed unchanged."""
    resumed = summary.get("resumed_from")
    if not isinstance(resumed, dict):
        return ""
    resumes = [s for s in _segments(summary) if "changed" in s] or [resumed]
    parts = [
        f"{key}={format_value(v.get('checkpoint'))}→{format_value(v.get('run'))}"
        if isinstance(v, dict)
        else str(key)
        for entry in resumes
        if isinstance(entry.get("changed"), dict)
        for key, v in sorted(entry["changed"].items())
    ]
    notes = ["resumed with changes: " + ", ".join(parts)] if parts else []
    if any(entry.get("config_checked") is False for entry in resumes):
        notes.append("resumed unchecked: the checkpoint records no config")
    return "; ".join(notes)


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
    """A hashable, sortable form of :attr:`RunRecord.settings` (values compared as :func:`same` does)."""
    return tuple(sorted((k, repr(normalized(v))) for k, v in settings.items()))


def shared_aug_seed(cfg: dict[str, Any], summary: dict[str, Any]) -> int | None:
    """The augmentation stream's seed where a sweep shared it (runs of every seed saw the same views: another
    experiment than streams that follow the seed, and not a rerun of one); None where it followed the seed.
    A summary without ``aug_stream`` predates it: a value other than the seed was shared."""
    value = (cfg.get("data") or {}).get("aug_seed")
    stream = summary.get("aug_stream")
    if value is None or stream in ("seed", "loader"):
        return None
    return value if stream == "shared" or value != cfg.get("seed") else None


def row_key(record: RunRecord) -> tuple:
    """Everything but the seed: runs that share it are seeds of one experiment, one row of the report.

    Data set, teacher architecture and teacher file (SHA-256; runs that predate it compare as unknown),
    student, method, every setting (:attr:`RunRecord.settings`) and the resume note (a run resumed with
    changes is neither setting, so it is never averaged with, nor supersedes, a run trained in one go).
    """
    return (
        record.dataset,
        record.teacher,
        record.teacher_sha256,
        record.student,
        record.method,
        settings_key(record.settings),
        record.resume_note,
    )


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder below ``root`` (``root`` itself included), sorted by path.

    Complete runs that repeat another complete run's :func:`row_key` and seed are marked ``superseded``,
    except the newest (by :attr:`RunRecord.finished`), so that a rerun of a seed is not averaged in twice. The training runs of teachers are marked (:func:`mark_teacher_runs`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    records = [r for d in _walk(root) if (r := read_run(d)) is not None]
    mark_teacher_runs(records)
    newest: dict[tuple, RunRecord] = {}
    # a run without a seed drew its own: never a rerun of another
    seeded = (r for r in records if r.complete and r.seed is not None)
    # a summary without finished_at predates the field: older than any with it, whatever its file time says
    for record in sorted(seeded, key=lambda r: (r.finished_at_known, r.finished, str(r.run_dir))):
        key = (*row_key(record), record.seed)
        if key in newest:
            old = newest[key]
            old.status, old.reason = SUPERSEDED, f"same setting and seed as the newer run {record.run_dir}"
        newest[key] = record
    return sorted(records, key=lambda r: str(r.run_dir))


def mark_teacher_runs(records: list[RunRecord]) -> None:
    """Give ``status="teacher"`` to the complete from-scratch runs that trained a teacher the other runs
    distilled from, and record which (:attr:`RunRecord.trained_teacher`): a teacher is listed once, with the
    run that trained it, and never counted as a from-scratch result.

    A run is a teacher's when it sits in a run folder's ``teacher/`` (the demo's automatic teacher training),
    or when the file it wrote is a teacher file of the other runs: the same path, or the same SHA-256 (only
    runs of a teacher architecture are hashed).
    """
    by_dir = {r.run_dir: r for r in records}
    wanted = {r.teacher_id for r in records if r.teacher_id}
    teacher_archs = {r.teacher for r in records if r.teacher}
    for record in records:
        if not (record.complete and record.is_scratch):
            continue
        parent = by_dir.get(record.run_dir.parent) if record.run_dir.name == NESTED_TEACHER else None
        if parent is not None and parent.teacher_id is None:
            parent = None  # a folder named teacher inside a run without one: nothing to say
        candidates = [parent.teacher_id] if parent is not None else []
        if record.student_weights:
            candidates.append(record.student_weights)
        if record.student in teacher_archs and wanted and (weights := _weights_file(record)) is not None:
            candidates.append(file_sha256(weights))
        if parent is not None or any(c in wanted for c in candidates):
            record.status = TEACHER
            record.trained_teacher = next((c for c in candidates if c in wanted), None)
            where = f"of {parent.run_dir}" if parent is not None else "other runs distilled from"
            record.reason = f"trained the teacher {where}: listed with the teachers, not a result"


def _weights_file(record: RunRecord) -> Path | None:
    """The student file a run wrote: where its summary says, or (a folder copied from another machine) its
    ``student.pth``; None when neither is there."""
    recorded = Path(record.student_weights) if record.student_weights else None
    for path in (recorded, record.run_dir / "student.pth"):
        if path is not None and path.is_file():
            return path
    return None

"""Every value of a composed run config checked before anything is built: types, ranges, choices.

Each :class:`Check` names a key (``*`` stands for any one key, e.g. every loss term) and what it accepts.
:func:`validate` reports every bad value at once, each with its key, its value and the valid range, so a
typo costs seconds instead of an epoch (or a teacher trained for seed "1.5"). ``docs/config-checks.md``
is the table of these checks; a test keeps it in step with :data:`CHECKS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pckd_lightning import preview
from pckd_lightning.data.classes import select_classes
from pckd_lightning.distillation.module import LR_SCALINGS
from pckd_lightning.distillation.options import COMPILE_MODES
from pckd_lightning.errors import ConfigError

#: precisions Lightning's Trainer accepts (as written in a config)
PRECISIONS = (
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)


@dataclass(frozen=True)
class Check:
    """What one key accepts: a kind (int, number, bool, str, choice, str_list, int_list), bounds, null."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    choices: Sequence[Any] = ()
    nullable: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = {
                "number": "a number",
                "int": "an int",
                "bool": "true or false",
                "str": "a string",
                "str_list": "a list of strings",
                "int_list": "a list of ints",
            }[self.kind]
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return text + (" or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is valid."""
        if value is None:
            return None if self.nullable or None in self.choices else "may not be null"
        if self.kind == "choice":
            return None if value in self.choices else "is not a valid choice"
        if self.kind in ("str_list", "int_list"):
            item = str if self.kind == "str_list" else int
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, item) and not isinstance(v, bool) for v in value
            )
            return None if ok else "is not " + self.describe()
        expected = {"int": (int,), "number": (int, float), "bool": (bool,), "str": (str,)}[self.kind]
        if not isinstance(value, expected) or (self.kind != "bool" and isinstance(value, bool)):
            return f"is a {type(value).__name__}"
        if self.kind == "number" and not math.isfinite(value):
            return "is not finite"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "is out of range"
        if self.high is not None and value > self.high:
            return "is out of range"
        return None


CHECKS: tuple[Check, ...] = (
    Check("seed", "int"),
    Check("task_name", "str"),
    Check("tags", "str_list"),
    Check("ckpt_path", "str", nullable=True),
    Check("export_path", "str", nullable=True),
    Check("resume.allow_changes", "str_list"),
    Check("print_config", "bool"),
    Check("module.performance.channels_last", "bool"),
    Check("module.performance.compile", "bool"),
    Check("module.performance.compile_losses", "bool"),
    Check("module.performance.compile_mode", "choice", choices=COMPILE_MODES),
    Check("module.teacher_options.min_accuracy", "number", low=0, high=100, nullable=True),
    Check("module.teacher_options.float32", "bool"),
    Check("module.teacher_options.measure", "bool"),
    Check("module.teacher_options.cache", "str", nullable=True),
    Check("module.teacher_options.cache_max_gib", "number", low=0, low_open=True),
    Check("module.sync_batchnorm", "bool"),
    Check("module.lr_scaling", "choice", choices=LR_SCALINGS),
    Check("module.finite_check_every_n_steps", "int", low=1),
    Check("data.batch_size", "int", low=1),
    Check("data.num_workers", "int", low=0),
    Check("data.views", "int", low=1),
    Check("data.image_size", "int", low=1),
    Check("data.train_per_class", "int", low=1, nullable=True),
    Check("data.val_per_class", "int", low=1, nullable=True),
    Check("data.class_subset", "int", low=2, nullable=True),
    Check("data.split_seed", "int"),
    Check("data.aug_seed", "int", nullable=True),
    Check("data.download", "bool"),
    Check("data.val_source", "choice", choices=("test", "holdout")),
    Check("data.holdout_per_class", "int", low=1),
    Check("distill.views", "int", low=1),
    Check("distill.terms.*.weight", "number", low=0),
    Check("distill.terms.*.temperature", "number", low=0, low_open=True),
    Check("distill.terms.*.warmup_epochs", "int", low=0),
    *(Check(key, kind, **limits) for key, kind, limits in preview.SCHEMA),
    Check("optimizer.lr", "number", low=0, low_open=True),
    Check("optimizer.momentum", "number", low=0, high=1),
    Check("optimizer.weight_decay", "number", low=0),
    Check("scheduler.milestones", "int_list"),
    Check("scheduler.gamma", "number", low=0, low_open=True),
    Check("scheduler.T_max", "int", low=1),
    Check("scheduler.eta_min", "number", low=0),
    Check("lr_milestones", "int_list"),
    Check("trainer.max_epochs", "int", low=1),
    Check("trainer.precision", "choice", choices=PRECISIONS),
    Check("trainer.accelerator", "choice", choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu")),
    Check("trainer.num_nodes", "int", low=1),
    Check("trainer.log_every_n_steps", "int", low=1),
    Check("trainer.check_val_every_n_epoch", "int", low=1),
    Check("logger.log_every_n_steps", "int", low=1, nullable=True),
)


def _select(cfg: DictConfig, parts: list[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for every key matching ``parts``; absent keys (this data set has none) are skipped,
    as are ``???`` (reported as missing) and interpolations (checked where they point: data.views ->
    distill.views)."""
    if not isinstance(cfg, DictConfig):
        return
    head, rest = parts[0], parts[1:]
    for name in list(cfg) if head == "*" else [head]:
        # `in` is False for ??? values; an interpolation is not resolved here
        if name not in cfg or OmegaConf.is_interpolation(cfg, name) or cfg[name] is None:
            continue
        key = f"{prefix}.{name}" if prefix else str(name)
        if rest:
            yield from _select(cfg[name], rest, key)
            continue
        value = cfg[name]
        yield (
            key,
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, (DictConfig, ListConfig))
            else value,
        )


def _problems(cfg: DictConfig) -> Iterator[str]:
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as err:  # an interpolation to a ??? value
        yield " ".join(str(err).split())
        missing = []
    for key in missing:
        yield f"{key} is required (??? in its config file): set it, e.g. {key}=<value>"
    for check in CHECKS:
        try:
            for key, value in _select(cfg, check.key.split(".")):
                problem = check.problem(value)
                if problem is not None:
                    yield f"{key}={value!r} {problem}: expected {check.describe()}"
        except OmegaConfBaseException as err:  # an interpolation that cannot be resolved
            yield f"{check.key}: {' '.join(str(err).split())}"
    yield from _weight_problems(cfg)
    yield from _class_problems(cfg)


def _known_classes(target: object) -> int | None:
    """The class count of the data module ``target`` names, where the data set fixes it (else None)."""
    if not isinstance(target, str):
        return None
    try:
        from hydra.utils import get_class

        return getattr(get_class(target), "known_classes", None)
    except Exception:  # a bad target is reported when the data module is built
        return None


def _class_problems(cfg: DictConfig) -> Iterator[str]:
    """``data.classes`` (and ``data.class_subset``) within the data set's classes, not both set: the
    data module's own rule (:func:`~pckd_lightning.data.classes.select_classes`), applied before any work."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return
    try:
        classes = data.get("classes")
        subset = data.get("class_subset")
        target = data.get("_target_")
    except OmegaConfBaseException:  # reported above
        return
    if isinstance(classes, ListConfig):
        classes = OmegaConf.to_container(classes, resolve=True)
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 2:
        subset = None  # a bad value is reported by its Check above
    try:
        select_classes(classes, subset, _known_classes(target))
    except ConfigError as err:
        yield str(err)


def _weight_problems(cfg: DictConfig) -> Iterator[str]:
    """A method needs one term with a weight > 0 (the sum of no terms has no gradient)."""
    if not isinstance(cfg.get("distill"), DictConfig):
        yield "distill is not set: choose a method, e.g. distill=kd"
        return
    terms = cfg.distill.get("terms") or {}
    weights = []
    for name in terms:
        try:
            term = terms[name]
            weights.append(term.get("weight", 1.0) if isinstance(term, DictConfig) else 0)
        except OmegaConfBaseException:  # reported above (??? or a broken interpolation)
            weights.append(1.0)
    if not any(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
        yield "distill.terms: no term has a weight > 0; keep at least one (e.g. distill.terms.ce.weight=1)"


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every bad value, before anything is built or trained."""
    problems = list(dict.fromkeys(_problems(cfg)))
    if problems:
        listed = "\n  ".join(problems)
        raise ConfigError(f"{len(problems)} bad config value(s):\n  {listed}")


def markdown_table() -> str:
    """The checks as a markdown table (``docs/config-checks.md`` holds it)."""
    rows = ["| key | accepts |", "|---|---|"]
    rows += [f"| `{c.key}` | {c.describe()} |" for c in CHECKS]
    return "\n".join(rows)

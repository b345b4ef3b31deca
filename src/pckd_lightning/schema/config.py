"""The run config checked against :class:`~pckd_lightning.schema.groups.RunConfig` before anything is built.

:func:`validate` reports every bad value at once, each with its key, its value, the valid range and the fix,
so a typo costs seconds instead of an epoch (or a teacher trained for seed "1.5");
:func:`markdown_table` is ``docs/config-checks.md``'s table of the checked keys.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from pckd_lightning.data.classes import MIN_CLASSES, select_classes
from pckd_lightning.errors import ConfigError
from pckd_lightning.schema.fields import Int, Number, accepts, describe, problem_of
from pckd_lightning.schema.groups import RunConfig

#: where a key stands for any one key of a mapping (every loss term)
ANY = "*"


def _fields(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    """``(key, type)`` of each of ``model``'s fields, by the name a config spells it, ``X | None`` as ``X``."""
    hints = typing.get_type_hints(model, include_extras=True)
    for name, info in model.model_fields.items():
        field = hints[name]
        if typing.get_origin(field) in (typing.Union, types.UnionType):
            (field,) = (a for a in typing.get_args(field) if a is not type(None))
        yield info.alias or name, field


def _group(field: Any) -> tuple[type[BaseModel] | None, bool]:
    """The group model ``field`` holds and whether it holds one per key (``dict[str, Group]``), or None."""
    if typing.get_origin(field) is dict:
        value = typing.get_args(field)[1]
        return (value, True) if isinstance(value, type) and issubclass(value, BaseModel) else (None, False)
    if isinstance(field, type) and issubclass(field, BaseModel):
        return field, False
    return None, False


def leaves(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, type)`` of every checked key, ``*`` standing for any one key (``distill.terms.*.weight``)."""
    for name, field in _fields(model):
        group, per_key = _group(field)
        if group is None:
            yield prefix + name, field
        else:
            yield from leaves(group, f"{prefix}{name}.{ANY + '.' if per_key else ''}")


def _present(cfg: DictConfig, name: str) -> bool:
    """Whether ``cfg.name`` is checked: set, not ``???`` (``in`` is False for it: reported as missing), not
    an interpolation (checked where it points: data.views -> distill.views) and not null."""
    return name in cfg and not OmegaConf.is_interpolation(cfg, name) and cfg[name] is not None


def _read(cfg: DictConfig, model: type[BaseModel], prefix: str, problems: list[str]) -> dict[str, Any]:
    """The values of ``cfg`` that ``model`` checks, as plain Python: those :func:`_present`, and of a group
    only a mapping (a data set without ``image_size`` has no such key: nothing to check)."""
    out: dict[str, Any] = {}
    for name, field in _fields(model):
        key = prefix + name
        try:
            if not _present(cfg, name):
                continue
            value = cfg[name]
            group, per_key = _group(field)
            if group is None:
                out[name] = (
                    OmegaConf.to_container(value, resolve=True)
                    if isinstance(value, (DictConfig, ListConfig))
                    else value
                )
            elif isinstance(value, DictConfig) and per_key:
                out[name] = {
                    str(k): _read(value[k], group, f"{key}.{k}.", problems)
                    for k in value
                    if _present(value, str(k)) and isinstance(value[k], DictConfig)
                }
            elif isinstance(value, DictConfig):
                out[name] = _read(value, group, key + ".", problems)
        except OmegaConfBaseException as err:  # an interpolation that cannot be resolved
            problems.append(f"{key}: {' '.join(str(err).split())}")
    return out


def _refusal(error: Any, values: dict[str, Any]) -> str:
    """One pydantic error as a line of the report: key, value, what is wrong, what the key accepts, the fix."""
    model: type[BaseModel] = RunConfig
    parts: list[str] = []
    value: Any = values
    field: Any = None
    loc = list(error["loc"])
    while loc and field is None:
        name = str(loc.pop(0))
        parts.append(name)
        value = value[name]
        kind = dict(_fields(model))[name]
        group, per_key = _group(kind)
        if group is None:
            field = kind
        elif per_key:
            name = str(loc.pop(0))
            parts.append(name)
            value, model = value[name], group
        else:
            model = group
    key, accepted = ".".join(parts), describe(field)
    fix = "one of these" if accepted.startswith("one of") else accepted
    return f"{key}={value!r} {problem_of(error, value, field)}: expected {accepted}. Fix: set {key} to {fix}"


def _problems(cfg: DictConfig) -> Iterator[str]:
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as err:  # an interpolation to a ??? value
        yield " ".join(str(err).split())
        missing = []
    for key in missing:
        yield f"{key} is required (??? in its config file): set it, e.g. {key}=<value>"
    problems: list[str] = []
    values = _read(cfg, RunConfig, "", problems)
    yield from problems
    try:
        RunConfig.model_validate(values)
    except ValidationError as err:
        for error in err.errors():
            yield _refusal(error, values)
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
    if not accepts(Int(MIN_CLASSES), subset):
        subset = None  # a bad value is reported with the other fields
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
    if not any(accepts(Number(0, low_open=True), w) for w in weights):
        yield "distill.terms: no term has a weight > 0; keep at least one (e.g. distill.terms.ce.weight=1)"


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every bad value, before anything is built or trained."""
    problems = list(dict.fromkeys(_problems(cfg)))
    if problems:
        listed = "\n  ".join(problems)
        raise ConfigError(f"{len(problems)} bad config value(s):\n  {listed}")


def markdown_table() -> str:
    """The checked keys as a markdown table (``docs/config-checks.md`` holds it)."""
    rows = ["| key | accepts |", "|---|---|"]
    rows += [f"| `{key}` | {describe(field)} |" for key, field in leaves()]
    return "\n".join(rows)

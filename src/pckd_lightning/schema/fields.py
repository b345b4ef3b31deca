"""Reusable constrained field types, and the words every refusal of them uses.

A field is a plain ``Annotated`` type that pydantic validates strictly (a bool is not an int, a string is
not a number, NaN is not a number). :func:`describe` says what a field accepts ("an int >= 1"),
:func:`problem` why a value is refused ("is a str", "is out of range"): the config check
(:mod:`pckd_lightning.schema.config`) and the library's own argument checks share them.
"""

from __future__ import annotations

import functools
import types
from numbers import Integral
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError

from pckd_lightning.errors import ConfigError


class Nullable:
    """Marks a field whose null is meaningful (the docs say "or null"); a null value is never refused."""

    def __repr__(self) -> str:
        return "Nullable()"


NULLABLE = Nullable()

Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
NullableStr = Annotated[str, Strict(), NULLABLE]
StrList = list[Str]
IntList = list[Annotated[int, Strict()]]
#: options handed on as keyword arguments (``model.<role>.kwargs``)
Options = dict[str, Any]


def _integral(value: object) -> object:
    return int(value) if isinstance(value, Integral) and not isinstance(value, bool) else value


#: an int, numpy's ints included (a list of class ids made with ``np.arange``)
AnyInt = Annotated[int, BeforeValidator(_integral), Strict()]


def _marked(field: Any, nullable: bool) -> Any:
    return Annotated[field, NULLABLE] if nullable else field


def Int(low: int | None = None, *, nullable: bool = False) -> Any:
    """An int (not a bool) >= ``low``."""
    bounds = () if low is None else (at.Ge(low),)
    return _marked(Annotated[(int, Strict(), *bounds)], nullable)


def Number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    nullable: bool = False,
) -> Any:
    """A finite int or float (not a bool) in ``[low, high]``; ``low_open``/``high_open`` leave out the bound."""
    bounds: list[Any] = []
    if low is not None:
        bounds.append(at.Gt(low) if low_open else at.Ge(low))
    if high is not None:
        bounds.append(at.Lt(high) if high_open else at.Le(high))
    return _marked(Annotated[(float, Strict(), AllowInfNan(False), *bounds)], nullable)


def OneOf(choices: tuple[Any, ...]) -> Any:
    """One of ``choices`` (compared by equality; ``None`` among them makes null a choice)."""
    return Literal[choices]


def _parts(field: Any) -> tuple[Any, list[Any]]:
    """The base type of ``field`` (``X | None`` as ``X``) and its metadata."""
    if get_origin(field) in (Union, types.UnionType):
        field = next(a for a in get_args(field) if a is not type(None))
    metadata: list[Any] = []
    while get_origin(field) is Annotated:
        field, *more = get_args(field)
        metadata = more + metadata
    return field, metadata


def describe(field: Any) -> str:
    """What ``field`` accepts, in words: "an int >= 1", "a number in (0, 1]", "one of 'a', 'b' or null"."""
    base, metadata = _parts(field)
    if get_origin(base) is Literal:
        text = "one of " + ", ".join(map(repr, get_args(base)))
    elif get_origin(base) is dict:
        text = "a mapping of options"
    elif get_origin(base) is list:
        (item,) = get_args(base)
        text = {int: "a list of ints", str: "a list of strings"}[_parts(item)[0]]
    else:
        text = {int: "an int", float: "a number", bool: "true or false", str: "a string"}[base]
        low = next((m for m in metadata if isinstance(m, (at.Ge, at.Gt))), None)
        high = next((m for m in metadata if isinstance(m, (at.Le, at.Lt))), None)
        if low is not None and high is not None:
            opening, lo = ("(", low.gt) if isinstance(low, at.Gt) else ("[", low.ge)
            closing, hi = (")", high.lt) if isinstance(high, at.Lt) else ("]", high.le)
            text += f" in {opening}{lo:g}, {hi:g}{closing}"
        elif low is not None:
            text += f" > {low.gt:g}" if isinstance(low, at.Gt) else f" >= {low.ge:g}"
        elif high is not None:
            text += f" < {high.lt:g}" if isinstance(high, at.Lt) else f" <= {high.le:g}"
    return text + (" or null" if NULLABLE in metadata else "")


#: pydantic's error types, in the words of a refusal
_WORDS = {
    "finite_number": "is not finite",
    "greater_than": "is out of range",
    "greater_than_equal": "is out of range",
    "less_than": "is out of range",
    "less_than_equal": "is out of range",
    "literal_error": "is not a valid choice",
}


def problem_of(error: dict[str, Any], value: object, field: Any) -> str:
    """One pydantic error of ``value`` (a ``field``) in words: "is a str", "is out of range"."""
    if get_origin(_parts(field)[0]) is list:
        return "is not " + describe(field)
    words = _WORDS.get(error["type"])
    return words if words is not None else f"is a {type(value).__name__}"


@functools.cache
def _adapter(field: Any) -> TypeAdapter:
    return TypeAdapter(field)


def problem(field: Any, value: object) -> str | None:
    """Why ``value`` is refused as a ``field`` ("is a bool", "is out of range"), or None when it is valid."""
    try:
        _adapter(field).validate_python(value, strict=True)
    except ValidationError as err:
        return problem_of(err.errors()[0], value, field)
    return None


def accepts(field: Any, value: object) -> bool:
    """Whether ``value`` is a valid ``field``: the library's argument checks ask this, then word their own
    refusal (which option, its published value, the config key that sets it)."""
    return problem(field, value) is None


def require(field: Any, value: Any, owner: str, option: str, *, note: str = "", fix: str = "") -> Any:
    """``value`` when it is a valid ``field``, else a :class:`ConfigError` in the library's words:
    "{owner}: {option} must be {what the field accepts}{note}, got {value}{fix}"."""
    if not accepts(field, value):
        raise ConfigError(f"{owner}: {option} must be {describe(field)}{note}, got {value!r}{fix}")
    return value


class Group(BaseModel):
    """An option group: its keys checked strictly; keys it does not name are other code's (Hydra's, a loss
    term's own options) and pass."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

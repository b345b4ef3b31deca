"""The schema package (issue 25): field types say what they accept and why a value is refused, in the words
every refusal uses; the run config check reports every bad value at once, the model keys included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import compose_config
from pckd_lightning.errors import ConfigError
from pckd_lightning.schema.config import validate
from pckd_lightning.schema.fields import (
    AnyInt,
    Bool,
    Int,
    IntList,
    Number,
    OneOf,
    accepts,
    describe,
    problem,
    require,
)


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (Int(1), "an int >= 1"),
        (Int(2, nullable=True), "an int >= 2 or null"),
        (Number(0, low_open=True), "a number > 0"),
        (Number(0, 1, high_open=True), "a number in [0, 1)"),
        (Number(0, 100, nullable=True), "a number in [0, 100] or null"),
        (Bool, "true or false"),
        (IntList, "a list of ints"),
        (OneOf(("none", "linear")), "one of 'none', 'linear'"),
    ],
)
def test_a_field_says_what_it_accepts(field, words):
    assert describe(field) == words


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        (Int(1), True, "is a bool"),
        (Int(1), 1.5, "is a float"),
        (Int(1), 0, "is out of range"),
        (Number(0), "fast", "is a str"),
        (Number(0), math.nan, "is not finite"),
        (Number(0), math.inf, "is not finite"),
        (IntList, [1, "a"], "is not a list of ints"),
        (OneOf(("none", "linear")), "linaer", "is not a valid choice"),
        (Bool, 1, "is a int"),
    ],
)
def test_a_refused_value_is_told_why(field, value, why):
    assert problem(field, value) == why


def test_numpy_numbers_are_numbers_and_numpy_ints_are_class_ids():
    assert accepts(Number(0), np.float32(0.5)) and accepts(AnyInt, np.int64(3))
    assert not accepts(AnyInt, True) and not accepts(Int(), np.int64(3))


def test_require_words_the_refusal_from_the_field():
    assert require(Int(0), 3, "Term", "count") == 3
    with pytest.raises(ConfigError, match=r"^Term: count must be an int >= 0 \(how many\), got -1; set x$"):
        require(Int(0), -1, "Term", "count", note=" (how many)", fix="; set x")


def test_every_bad_value_is_reported_at_once_with_its_fix(tmp_path):
    overrides = [
        "seed=1.5",
        "trainer.precision=17",
        "model.student.name=1",
        "+model.teacher.kwargs=3",
        "distill.terms.kd.preview=1",
    ]
    with pytest.raises(ConfigError) as refused:
        validate(compose_config(overrides, tmp_path))
    lines = str(refused.value).splitlines()
    assert lines[0] == "5 bad config value(s):"
    assert "  seed=1.5 is a float: expected an int. Fix: set seed to an int" in lines
    assert any(
        line.startswith("  trainer.precision=17 is not a valid choice: expected one of") for line in lines
    )
    assert any("model.student.name=1 is a int: expected a string" in line for line in lines)
    assert any("model.teacher.kwargs=3 is a int: expected a mapping of options" in line for line in lines)
    assert any("distill.terms.kd.preview=1 is a int: expected true or false" in line for line in lines)


def test_a_missing_or_interpolated_term_is_not_checked_twice(tmp_path):
    cfg = compose_config(["distill.terms.kd.weight=${distill.terms.ce.weight}"], tmp_path)
    validate(cfg)  # the interpolation is checked where it points
    cfg = compose_config(["+distill.terms.extra=???"], tmp_path)
    with pytest.raises(ConfigError, match=r"^1 bad config value\(s\):\n  distill\.terms\.extra is required"):
        validate(cfg)

"""Which classes a run keeps (``data.classes``, or ``data.class_subset`` for the first N), checked once.

One function owns the rule, so the config check (before any work) and the data module refuse the same
values with the same message. Label ``i`` of a run is original class ``classes[i]``: the ids are remapped
to ``0..k-1`` in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pckd_lightning.errors import ConfigError
from pckd_lightning.schema.fields import AnyInt, accepts

#: the range form of ``data.classes``: "first-last", both ends included (e.g. "20-39": 20 classes)
RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
#: fewer classes make no classifier (and no top-5)
MIN_CLASSES = 2
_FORMS = (
    "a list of class ids (e.g. data.classes=[20,21,22]) or a range 'first-last' (e.g. data.classes=20-39)"
)


def _ids_text(total: int | None) -> str:
    return f"0..{total - 1}" if total is not None else "0..(the number of classes - 1)"


def parse_classes(value: object, total: int | None = None) -> tuple[int, ...]:
    """``data.classes`` (a list of ids or a range "first-last") as a tuple of distinct ids in ``0..total-1``.

    ``total=None`` (a data set whose class count only its files tell) checks everything but the top end.
    Raises :class:`ConfigError` naming the key, the value, the valid ids and the fix.
    """
    valid = _ids_text(total)

    def refuse(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"data.classes={value!r} {problem}; class ids are ints in {valid}. Fix: {fix}.")

    if isinstance(value, str):
        match = RANGE.match(value)
        if match is None:
            raise refuse("is not a range 'first-last'", f"write {_FORMS}")
        first, last = int(match[1]), int(match[2])
        if first > last:
            raise refuse("runs backwards", f"write the smaller id first, e.g. data.classes={last}-{first}")
        ids: list[object] = list(range(first, last + 1))
    elif isinstance(value, Sequence):  # a list, a tuple or OmegaConf's ListConfig
        ids = list(value)
    else:
        raise refuse("is neither a list nor a range", f"write {_FORMS}, or null to keep every class")
    for i in ids:
        if not accepts(AnyInt, i):
            raise refuse(f"holds {i!r}, not an int", "list ints only, e.g. data.classes=[20,21,22]")
    out = tuple(int(i) for i in ids)  # type: ignore[arg-type]
    if len(out) < MIN_CLASSES:
        raise refuse(
            f"keeps {len(out)} class{'' if len(out) == 1 else 'es'}, and a classifier needs at least "
            f"{MIN_CLASSES}",
            f"list {MIN_CLASSES} or more ids, or null to keep every class",
        )
    bad = [i for i in out if i < 0 or (total is not None and i >= total)]
    if bad:
        raise refuse(f"holds {bad[0]}, outside the data set's ids", f"keep to ids in {valid}")
    seen: set[int] = set()
    for i in out:
        if i in seen:
            raise refuse(f"holds {i} more than once", "list each class once (it is one label)")
        seen.add(i)
    return out


def select_classes(
    classes: object, class_subset: int | None, total: int | None = None
) -> tuple[int, ...] | None:
    """The original ids of the kept classes in label order, or None to keep every class.

    ``class_subset=N`` is the first N classes, i.e. ``classes=[0, ..., N-1]``; setting both is refused,
    since they say the same thing twice and could disagree.
    """
    if class_subset is not None and classes is not None:
        raise ConfigError(
            f"data.class_subset={class_subset!r} and data.classes={classes!r} are both set, and both choose "
            "the classes to keep. Fix: set one of them and the other to null (data.class_subset=N is "
            "data.classes=0-<N-1>, the first N classes)."
        )
    if classes is not None:
        return parse_classes(classes, total)
    if class_subset is None:
        return None
    if not accepts(AnyInt, class_subset):
        raise ConfigError(f"data.class_subset={class_subset!r} is not an int. Fix: set an int >= 2 or null.")
    if class_subset < MIN_CLASSES:
        raise ConfigError(
            f"data.class_subset={class_subset} keeps fewer than {MIN_CLASSES} classes, and a classifier "
            f"needs at least {MIN_CLASSES}. Fix: use a value >= {MIN_CLASSES}, or null to keep every class."
        )
    if total is not None and class_subset > total:
        raise ConfigError(
            f"data.class_subset={class_subset} but the data set has {total} classes. Fix: use a value in "
            f"{MIN_CLASSES}..{total}, or null to keep every class."
        )
    return tuple(range(int(class_subset)))

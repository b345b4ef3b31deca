"""OmegaConf resolvers the configs use; light to import, so ``pckd-train`` registers them before composing."""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pckd_lightning.paths import CONFIG_DIR
from pckd_lightning.schema.fields import Int, accepts

#: names one launch of ``pckd-train``; set by the first process, inherited by its DDP ranks and sweep workers
LAUNCH_ID_ENV = "PCKD_LAUNCH_ID"


def launch_id() -> str:
    """``<date>_<time>_<6 hex>``: two launches in the same second (a shell loop, a job array) differ."""
    if LAUNCH_ID_ENV not in os.environ:
        os.environ[LAUNCH_ID_ENV] = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    return os.environ[LAUNCH_ID_ENV]


def run_dir(runs_root: str, ckpt_path: str | None = None) -> str:
    """A run's folder: a resumed run continues in its checkpoint's run folder, a new run gets its own."""
    if ckpt_path:
        checkpoint = Path(ckpt_path).expanduser().resolve()
        if checkpoint.parent.name == "checkpoints":
            return str(checkpoint.parent.parent)
    return str(Path(runs_root) / launch_id())


#: the longest description ``pckd-train --help`` shows on an option's line
CATALOG_WIDTH = 100


def catalog(group: str) -> str:
    """``name  description`` per option of a config group (for --help): the first sentence of each file's
    leading comment, cut to :data:`CATALOG_WIDTH` at a space outside parentheses."""
    lines = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml"), key=lambda p: p.stem.lower()):
        lines.append(f"  {path.stem:<34} {_first_sentence(_leading_comment(path.read_text()))}")
    return "\n".join(lines)


def _leading_comment(text: str) -> str:
    """The comment lines a config file opens with (but ``# @package``), as one paragraph."""
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            comments.append(line.lstrip("#").strip())
    return " ".join(c for c in comments if c)


def _first_sentence(text: str, width: int = CATALOG_WIDTH) -> str:
    """Up to the first full stop followed by a space; past ``width``, cut at the last space outside
    parentheses and backticks before it, marked with an ellipsis."""
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    if len(sentence) <= width:
        return sentence
    depth, quoted, cut = 0, False, 0
    for i, char in enumerate(sentence[:width]):
        if char == "`":
            quoted = not quoted
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == " " and depth == 0 and not quoted:
            cut = i
    return sentence[:cut].rstrip(",;:") + " ..."


def scaled_milestones(max_epochs: int, fractions: list[float]) -> ListConfig:
    """A step schedule's milestones at ``fractions`` of any length: each the first epoch at or past its fraction.

    The published CIFAR-100 recipe decays at 150, 180 and 210 of 240 epochs (0.625, 0.75, 0.875); a short
    run keeps that shape (20 epochs: 13, 15, 18) instead of never reaching the recipe's fixed milestones.
    """
    if not accepts(Int(1), max_epochs):
        raise ValueError(f"scaled milestones need trainer.max_epochs >= 1, got {max_epochs!r}")
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"scaled milestones take fractions in (0, 1), got {list(fractions)}")
    # a ListConfig, not a list: OmegaConf.resolve (which instantiate calls) cannot store a plain list in a node
    return OmegaConf.create([math.ceil(round(f * max_epochs, 9)) for f in fractions])


def by_pair(table: dict[str, Any], default: Any, *, _root_: DictConfig) -> Any:
    """``table``'s value for the run's pair, ``<teacher>_<student>`` by the architectures' names
    (``model.teacher.name``, ``model.student.name``), as the published per-pair settings are listed; ``default``
    for any other pair and without a teacher. The table sits in the method's (or the recipe's) own config, and
    the run's resolved config records only the value it chose."""
    names = [
        OmegaConf.select(_root_, f"model.{m}.name", throw_on_missing=False) for m in ("teacher", "student")
    ]
    return table.get("_".join(names), default) if all(names) else default


#: trainer settings that cut a run's training short (smoke tests, quick checks); with the value that does not,
#: where it is neither None nor False (an int ``limit_*`` of 1 is one batch, the float 1.0 all of them)
SHORTENING = {
    "fast_dev_run": 0,
    "limit_train_batches": 1.0,
    "overfit_batches": 0,
    "max_steps": -1,
    "max_time": None,
}


def _cuts(key: str, value: Any) -> bool:
    """Whether ``trainer.<key>=value`` shortens the run."""
    if value is None or value is False:
        return False
    if key.startswith("limit_"):
        return not (isinstance(value, float) and value == SHORTENING[key])
    return value != SHORTENING[key]


def shortened(*, _root_: DictConfig) -> str:
    """``""``, or ``_short-<8 hex>`` naming the run's settings among :data:`SHORTENING`: the demo teacher's
    cache file carries it, so a teacher trained in a shortened run is never the one a full run finds."""
    trainer = _root_.get("trainer") or {}
    cut = {k: trainer[k] for k in SHORTENING if _cuts(k, trainer.get(k))}
    if not cut:
        return ""
    text = ",".join(f"{k}={v!r}" for k, v in sorted(cut.items()))
    return f"_short-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("pckd.run_dir"):
        OmegaConf.register_new_resolver("pckd.run_dir", run_dir)
    if not OmegaConf.has_resolver("pckd.scaled_milestones"):
        OmegaConf.register_new_resolver("pckd.scaled_milestones", scaled_milestones)
    if not OmegaConf.has_resolver("pckd.catalog"):
        OmegaConf.register_new_resolver("pckd.catalog", catalog)
    if not OmegaConf.has_resolver("pckd.by_pair"):
        OmegaConf.register_new_resolver("pckd.by_pair", by_pair)
    if not OmegaConf.has_resolver("pckd.shortened"):
        OmegaConf.register_new_resolver("pckd.shortened", shortened)

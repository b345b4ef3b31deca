"""Run configs written by earlier versions, upgraded to this version's form, so that a checkpoint or a run folder
of an earlier version compares equal to the same run now (resume, pckd-report, pckd-eval).

:data:`UPGRADES` lists the steps in the order they apply, each named, with the change that made the earlier
form obsolete and what it rewrites; a step that finds nothing of its earlier form leaves the config alone, and
one that rewrites it says so in a warning (as deprecated names are mapped with a warning). The preview weights
are imported only when a config has them, so that reading the module costs no torch import.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Config = dict[str, Any]

#: where the preview weights were built before the training step owned them
EARLIER_PREVIEW_TARGET = "pckd_lightning.callbacks.PreviewWeighting"
#: where conf/distill/preview/ builds them now
PREVIEW_TARGET = "pckd_lightning.losses.PreviewWeights"


@dataclass(frozen=True)
class Upgrade:
    """One step from an earlier form of the run config to this version's."""

    name: str
    #: the change that made the earlier form obsolete
    since: str
    #: what the step rewrites, as its warning says it
    changes: str
    #: rewrites the config in place; returns whether it found (and rewrote) the earlier form
    apply: Callable[[Config], bool]


def _preview(cfg: Config) -> dict[str, Any] | None:
    distill = cfg.get("distill")
    preview = distill.get("preview") if isinstance(distill, dict) else None
    return preview if isinstance(preview, dict) else None


def _preview_target(cfg: Config) -> bool:
    preview = _preview(cfg)
    if preview is None or preview.get("_target_") != EARLIER_PREVIEW_TARGET:
        return False
    preview["_target_"] = PREVIEW_TARGET
    return True


def _preview_schedule(cfg: Config) -> bool:
    preview = _preview(cfg)
    missing = [] if preview is None else [k for k in ("schedule", "reference_epochs") if k not in preview]
    if missing:
        from pckd_lightning.losses.preview import PreviewWeights

        defaults = inspect.signature(PreviewWeights).parameters
        preview.update({key: defaults[key].default for key in missing})
    return bool(missing)


def _module_group(cfg: Config) -> bool:
    if "module" in cfg:
        return False
    distill = cfg.get("distill")
    cfg["module"] = {
        "lr_scaling": cfg.get("lr_scaling", "none"),
        "preview": distill.get("preview") if isinstance(distill, dict) else None,
        "sync_batchnorm": (cfg.get("trainer") or {}).get("sync_batchnorm", False),
    }
    return True


#: the upgrades, in the order they apply
UPGRADES = (
    Upgrade(
        "preview-target",
        since="issue 16 (the training step owns the preview weights)",
        changes=f"distill.preview built by {EARLIER_PREVIEW_TARGET} now builds {PREVIEW_TARGET}",
        apply=_preview_target,
    ),
    Upgrade(
        "preview-schedule",
        since="issue 16 (distill/preview=default|progress)",
        changes="distill.preview without schedule or reference_epochs gets PreviewWeights' defaults for them",
        apply=_preview_schedule,
    ),
    Upgrade(
        "module-group",
        since="issue 16 (the conf/module group)",
        changes="a config without the module group gets the keys it mirrors (lr_scaling, distill.preview, "
        "trainer.sync_batchnorm)",
        apply=_module_group,
    ),
)


def spell_out_preview_all(cfg: Config) -> None:
    """``+preview=all``'s ``distill.preview_every_term`` spelt out as ``preview: true`` on the terms it marks:
    the one form configs are compared in, as earlier versions wrote them (this version's shorthand, so it is
    no upgrade and says nothing)."""
    distill = cfg.get("distill")
    if not isinstance(distill, dict) or not distill.pop("preview_every_term", False):
        return
    from pckd_lightning.losses.preview import marked_by_preview_all

    for name, term in (distill.get("terms") or {}).items():
        if isinstance(term, dict) and marked_by_preview_all(name, term["_target_"]):
            term["preview"] = True


def upgrade_config(cfg: Config, source: str = "a run config") -> Config:
    """A resolved run config (a copy) as this version writes and compares it, whichever version wrote it:
    :data:`UPGRADES` in order, each warning when it rewrites ``source``, then :func:`spell_out_preview_all`."""
    cfg = copy.deepcopy(cfg)
    for upgrade in UPGRADES:
        if upgrade.apply(cfg):
            log.warning(
                "%s was written by an earlier version: %s (upgrade %s, since %s)",
                source,
                upgrade.changes,
                upgrade.name,
                upgrade.since,
            )
    spell_out_preview_all(cfg)
    return cfg

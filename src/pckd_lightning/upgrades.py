"""Run configs written by earlier versions, upgraded to this version's form, so that a checkpoint or a run folder
of an earlier version compares equal to the same run now (resume, pckd-report, pckd-eval).

:data:`UPGRADES` lists the steps in the order they apply, each named, with the change that made the earlier
form obsolete and what it rewrites; a step that finds nothing of its earlier form leaves the config alone, and
one that rewrites it says so in a warning (as deprecated names are mapped with a warning). The preview weights
are imported only when a config has them, so that reading the module costs no torch import.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Config = dict[str, Any]


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


def _distill(cfg: Config) -> dict[str, Any]:
    distill = cfg.get("distill")
    return distill if isinstance(distill, dict) else {}


def _preview_target(cfg: Config) -> bool:
    from pckd_lightning.preview.config import upgrade_target

    return upgrade_target(_distill(cfg))


def _preview_schedule(cfg: Config) -> bool:
    from pckd_lightning.preview.config import upgrade_schedule

    return upgrade_schedule(_distill(cfg))


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


#: the module's settings that were top-level blocks (and module.<new> pointed at them), by their earlier key
MODULE_SETTINGS = {"performance": "performance", "teacher": "teacher_options", "lr_scaling": "lr_scaling"}
#: the per-pair settings that earlier model configs held for the methods and the recipe to read: now tables
#: there (``pckd.by_pair``), whose chosen values the terms and the optimizer hold
PAIR_SETTINGS = ("dkd_beta", "ls_temperature", "ls_kd_weight", "lr")


def _settings_homes(cfg: Config) -> bool:
    module = cfg.setdefault("module", {})
    before = copy.deepcopy(cfg)
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
    if "preview" in module:  # a copy of distill.preview, as its interpolation resolves
        module["preview"] = copy.deepcopy(_distill(cfg).get("preview"))
    return cfg != before


#: the one size of CIFAR-100's images, which its data configs did not declare before data.image_size had a home
CIFAR_IMAGE_SIZE = 32


def upgrade_data_section(data: dict[str, Any]) -> None:
    """A CIFAR-100 data section without ``image_size`` gets the one size its images have. Shared with the
    teacher cache, whose key holds the data section as it was written."""
    if "image_size" not in data and "CIFAR100" in str(data.get("_target_", "")):
        data["image_size"] = CIFAR_IMAGE_SIZE


def _group_homes(cfg: Config) -> bool:
    before = copy.deepcopy(cfg)
    data = cfg.get("data")
    if isinstance(data, dict):
        upgrade_data_section(data)
    distill = cfg.get("distill")
    if isinstance(distill, dict) and "view_recipe" not in distill:
        distill["view_recipe"] = data.get("view_recipe", "rotation") if isinstance(data, dict) else "rotation"
    cfg.setdefault("scheduler", None)
    cfg.setdefault("lr_milestones", [])
    return cfg != before


#: the upgrades, in the order they apply
UPGRADES = (
    Upgrade(
        "preview-target",
        since="issues 16 and 25 (the training step, then the preview package, owns the preview weights)",
        changes="distill.preview built by pckd_lightning.callbacks.PreviewWeighting or "
        "pckd_lightning.losses.PreviewWeights now builds pckd_lightning.preview.PreviewWeights",
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
    Upgrade(
        "settings-homes",
        since="issue 25 (one home each)",
        changes="the top-level lr_scaling, performance and teacher blocks and trainer.sync_batchnorm move into "
        "module (teacher as module.teacher_options), the model's per-pair dkd_beta, ls_temperature, "
        "ls_kd_weight and lr go (conf/distill and the recipe hold them as per-pair tables)",
        apply=_settings_homes,
    ),
    Upgrade(
        "group-homes",
        since="issue 25 (config groups without mirrors: each setting declared once)",
        changes="distill.view_recipe (the data's view_recipe), a CIFAR-100 data.image_size (32), scheduler "
        "(null) and lr_milestones ([]) are declared where an earlier config left them out",
        apply=_group_homes,
    ),
)


def upgrade_config(cfg: Config, source: str = "a run config") -> Config:
    """A resolved run config (a copy) as this version writes and compares it, whichever version wrote it:
    :data:`UPGRADES` in order, each warning when it rewrites ``source``, then ``+preview=all`` spelt out
    (:func:`pckd_lightning.preview.config.spell_out_every_term`)."""
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
    from pckd_lightning.preview.config import spell_out_every_term

    spell_out_every_term(_distill(cfg))
    return cfg


#: command-line spellings of earlier versions (a key, a section or a config group) and where they live now
RENAMED_OVERRIDES = {
    "distill/preview": "preview@distill.preview",
    **{old: f"module.{new}" for old, new in MODULE_SETTINGS.items()},  # the settings-homes upgrade's moves
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

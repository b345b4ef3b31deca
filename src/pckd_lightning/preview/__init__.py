"""PCKD's preview strategy (spec §3), owned here whole: the per-image weights and their schedule
(:class:`PreviewWeights`), the callback that moves them from epoch to epoch (:class:`PreviewWeighting`), what a
run config may say about them and the ``+preview=all`` rule (:mod:`pckd_lightning.preview.config`).

The training step multiplies the terms marked ``preview: true`` by the weights; the module, the runner, the
value checks, resumes and the config upgrades ask this package through the functions below.
"""

from pckd_lightning.preview.callback import PreviewWeighting, callbacks_for
from pckd_lightning.preview.config import (
    TARGET,
    PreviewOptions,
    check,
    check_marked,
    fixed_keys,
    marked_by_preview_all,
)
from pckd_lightning.preview.weights import PreviewWeights

__all__ = [
    "TARGET",
    "PreviewOptions",
    "PreviewWeighting",
    "PreviewWeights",
    "callbacks_for",
    "check",
    "check_marked",
    "fixed_keys",
    "marked_by_preview_all",
]

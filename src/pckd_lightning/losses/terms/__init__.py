"""Loss-term modules: each wraps one function of :mod:`pckd_lightning.losses.functional`."""

from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.losses.terms.category_contrast import CategoryContrastTerm
from pckd_lightning.losses.terms.center_align import CenterAlignTerm
from pckd_lightning.losses.terms.cross_entropy import CrossEntropyTerm
from pckd_lightning.losses.terms.feature_align import FeatureAlignTerm
from pckd_lightning.losses.terms.kd import KDTerm

__all__ = [
    "CategoryContrastTerm",
    "CenterAlignTerm",
    "CrossEntropyTerm",
    "FeatureAlignTerm",
    "KDTerm",
    "LossTerm",
    "PairInfo",
]

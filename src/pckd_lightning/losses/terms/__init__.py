"""Loss-term modules, one per loss; those whose formula is in :mod:`pckd_lightning.losses.functional`
(PCKD's, KD, DIST, MLKD) wrap it, the others define it in their own module."""

from pckd_lightning.losses.terms.activation_boundary import ABTerm
from pckd_lightning.losses.terms.attention import ATTerm
from pckd_lightning.losses.terms.base import InitStageTerm, LossTerm, PairInfo
from pckd_lightning.losses.terms.category_contrast import CategoryContrastTerm
from pckd_lightning.losses.terms.center_align import CenterAlignTerm
from pckd_lightning.losses.terms.correlation import CCTerm
from pckd_lightning.losses.terms.crd import CRDTerm
from pckd_lightning.losses.terms.cross_entropy import CrossEntropyTerm
from pckd_lightning.losses.terms.ctkd import CurriculumTemperature
from pckd_lightning.losses.terms.dist import DISTTerm
from pckd_lightning.losses.terms.dkd import DKDTerm
from pckd_lightning.losses.terms.factor_transfer import FactorTransferTerm
from pckd_lightning.losses.terms.feature_align import FeatureAlignTerm
from pckd_lightning.losses.terms.fitnet import FitNetTerm
from pckd_lightning.losses.terms.fsp import FSPTerm
from pckd_lightning.losses.terms.kd import KDTerm
from pckd_lightning.losses.terms.mlkd import (
    AllViewsCrossEntropyTerm,
    MLKDBatchTerm,
    MLKDClassTerm,
    MLKDInstanceTerm,
)
from pckd_lightning.losses.terms.nst import NSTTerm
from pckd_lightning.losses.terms.pkt import PKTTerm
from pckd_lightning.losses.terms.reviewkd import ReviewKDTerm
from pckd_lightning.losses.terms.rkd import RKDTerm
from pckd_lightning.losses.terms.similarity import SPTerm
from pckd_lightning.losses.terms.vid import VIDTerm

__all__ = [
    "ABTerm",
    "ATTerm",
    "AllViewsCrossEntropyTerm",
    "CCTerm",
    "CRDTerm",
    "CategoryContrastTerm",
    "CenterAlignTerm",
    "CrossEntropyTerm",
    "CurriculumTemperature",
    "DISTTerm",
    "DKDTerm",
    "FSPTerm",
    "FactorTransferTerm",
    "FeatureAlignTerm",
    "FitNetTerm",
    "InitStageTerm",
    "KDTerm",
    "LossTerm",
    "MLKDBatchTerm",
    "MLKDClassTerm",
    "MLKDInstanceTerm",
    "NSTTerm",
    "PKTTerm",
    "PairInfo",
    "RKDTerm",
    "ReviewKDTerm",
    "SPTerm",
    "VIDTerm",
]

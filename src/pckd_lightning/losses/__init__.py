"""Distillation losses: a functional layer and the pluggable loss-term modules built on it."""

from pckd_lightning.losses import functional
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import (
    ATTerm,
    CategoryContrastTerm,
    CCTerm,
    CenterAlignTerm,
    CRDTerm,
    CrossEntropyTerm,
    DKDTerm,
    FeatureAlignTerm,
    FitNetTerm,
    KDTerm,
    LossTerm,
    NSTTerm,
    PairInfo,
    PKTTerm,
    ReviewKDTerm,
    RKDTerm,
    SPTerm,
    VIDTerm,
)

__all__ = [
    "ATTerm",
    "CCTerm",
    "CRDTerm",
    "CategoryContrastTerm",
    "CenterAlignTerm",
    "CrossEntropyTerm",
    "DKDTerm",
    "DistillContext",
    "FeatureAlignTerm",
    "FitNetTerm",
    "KDTerm",
    "LossTerm",
    "NSTTerm",
    "PKTTerm",
    "PairInfo",
    "RKDTerm",
    "ReviewKDTerm",
    "SPTerm",
    "VIDTerm",
    "functional",
]

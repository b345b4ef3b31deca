"""Distillation losses: a functional layer and the pluggable loss-term modules built on it."""

from pckd_lightning.losses import functional
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import (
    CategoryContrastTerm,
    CenterAlignTerm,
    CrossEntropyTerm,
    FeatureAlignTerm,
    KDTerm,
    LossTerm,
    PairInfo,
)

__all__ = [
    "CategoryContrastTerm",
    "CenterAlignTerm",
    "CrossEntropyTerm",
    "DistillContext",
    "FeatureAlignTerm",
    "KDTerm",
    "LossTerm",
    "PairInfo",
    "functional",
]

"""Distillation losses: a functional layer and the pluggable loss-term modules built on it (the preview
weights that the terms marked ``preview`` are multiplied by are :mod:`pckd_lightning.preview`'s)."""

from pckd_lightning.losses import functional, terms
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import *  # noqa: F403  (one list of the terms: terms.__all__)

__all__ = ["DistillContext", "functional", *terms.__all__]

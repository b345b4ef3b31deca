"""Lightning callbacks of pckd-lightning."""

from pckd_lightning.callbacks.best_score import KeepBestScore
from pckd_lightning.callbacks.final_validation import ValidateFinalEpoch
from pckd_lightning.callbacks.gradient_share import GradientShare
from pckd_lightning.callbacks.init_stage import InitStage
from pckd_lightning.callbacks.rng_state import RNGStateCheckpoint

__all__ = ["GradientShare", "InitStage", "KeepBestScore", "RNGStateCheckpoint", "ValidateFinalEpoch"]

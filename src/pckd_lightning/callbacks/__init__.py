"""Lightning callbacks of pckd-lightning."""

from pckd_lightning.callbacks.preview import PreviewWeighting

__all__ = ["PreviewWeighting"]

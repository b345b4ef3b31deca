"""A composed config turned into a finished run, read in order: check (cross-group consistency), build (data,
models, loss terms, loggers, trainer), fit (the run's folder, the teacher it may train first, training) and
summarize (summary.json, provenance; a run stopped by a signal in interrupts).

Kept apart from the Hydra entry point so notebooks and tests can call :func:`fit` with a config composed by
``hydra.compose`` (or any DictConfig of the same shape).
"""

from pckd_lightning.run.check import check_config
from pckd_lightning.run.fit import fit

__all__ = ["check_config", "fit"]

"""pckd-lightning: knowledge distillation (PCKD and its baselines) as PyTorch Lightning modules."""

__version__ = "0.1.0"

from pckd_lightning import resolvers as _resolvers

_resolvers.register()  # the configs' ${pckd.run_dir:...}; cheap (omegaconf only)

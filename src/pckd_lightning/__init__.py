"""pckd-lightning: knowledge distillation (PCKD and its baselines) as PyTorch Lightning modules."""

__version__ = "0.1.0"

"""Which ``torch.device`` a user's device option names (``pckd-eval --device``, GPU-resident data)."""

from __future__ import annotations

import torch

from pckd_lightning.errors import ConfigError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The ``torch.device`` that a device option (``None``, ``"auto"``, ``"cpu"``, ``"cuda:1"``, ...) names.

    ``None`` and ``"auto"`` resolve to CUDA when it is available, else CPU; anything else is taken as
    given. A CUDA device without an index resolves to the current CUDA device (``cuda:N``), so it compares
    equal to the devices of tensors placed there. Raises :class:`~pckd_lightning.errors.ConfigError` when
    a CUDA device is asked for and CUDA is not available.
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available; use cpu (or auto)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device

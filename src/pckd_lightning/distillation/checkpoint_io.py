"""Checkpoint files: written atomically (a kill mid-write never truncates one), read with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pckd_lightning.atomic import atomic_open
from pckd_lightning.errors import CheckpointError

#: the training checkpoint's key for how many processes trained it (the module writes it; a resume compares)
WORLD_SIZE_KEY = "world_size"
#: how a file torch.save wrote begins: a zip archive, or (torch < 1.6) a pickle of protocol 2 or later
TORCH_FILE_HEADS = (b"PK\x03\x04", b"\x80")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO through :func:`pckd_lightning.atomic.atomic_open`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_open(path) as f:
            torch.save(checkpoint, f)


def read_checkpoint(
    path: str | Path, what: str = "checkpoint", weights_only: bool = False, fix: str = "check the path"
) -> dict[str, Any]:
    """A checkpoint's dict on the CPU; :class:`CheckpointError` naming the file (``what``) and ``fix`` when
    it is missing or broken. ``weights_only=True`` for files from elsewhere (tensors and containers only);
    a ``.safetensors`` file holds tensors only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist; {fix}")
    try:
        if path.suffix == ".safetensors":  # a bare state dict (timm's and the Hugging Face Hub's format)
            raw = safetensors.torch.load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # truncated, not a torch file, wrong format: one meaning for the user
        raise CheckpointError(f"{what} {str(path)!r} {_unreadable(path, err)}; {fix}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{what} {str(path)!r} holds a {type(raw).__name__}, not a checkpoint dict; {fix}"
        )
    return raw


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in the user's terms: torch's own text advises loading with
    ``weights_only=False``, which would run whatever code the file holds."""
    if path.suffix == ".safetensors":
        return f"cannot be read as a safetensors file ({type(err).__name__}: {err}); the file is corrupt"
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_FILE_HEADS):
        return "is not a PyTorch checkpoint (neither torch.save's zip format nor a pickle)"
    text = str(err)
    detail = text.partition("WeightsUnpickler error:")[2] or text
    detail = " ".join(detail.split()).split(". ")[0]
    return f"cannot be read ({type(err).__name__}: {detail}); the file is corrupt or not a PyTorch checkpoint"

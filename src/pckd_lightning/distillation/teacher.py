"""Loading a frozen teacher from this project's checkpoints or from published ``{"model": ...}`` files."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from pckd_lightning.distillation.checkpoint_io import read_checkpoint
from pckd_lightning.errors import CheckpointError
from pckd_lightning.models import WeightsFile, ZooModel, create_model

log = logging.getLogger(__name__)

HOW_TO_GET_A_TEACHER = (
    "a teacher file holds the teacher's weights as torch.save writes them: {'model': state_dict} (a run's "
    "student.pth, a CRD-benchmark ckpt_epoch_240.pth), a run's Lightning .ckpt or a plain state dict (also "
    "as .safetensors, as timm saves them); train "
    "one with `pckd-train experiment=cifar100_teacher_<arch>` (it writes student.pth in its run folder) or use "
    "a published CRD-benchmark teacher (`<arch>_vanilla/ckpt_epoch_240.pth`), then set "
    "model.teacher.checkpoint=/path/to/file"
)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_state_dict(checkpoint: Mapping, prefix: str = "student.") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint in any of the layouts we accept.

    ``{"model": sd}`` (CRD benchmark teachers and this project's exports), a Lightning checkpoint of a
    DistillationModule (its ``student.`` weights), ``{"state_dict": sd}`` without that prefix (timm's and
    many training scripts' checkpoints), or a bare state dict.
    """
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        return dict(checkpoint["model"])
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        sd = checkpoint["state_dict"]
        if not any(k.startswith(prefix) for k in sd):  # not a DistillationModule's: the model's own
            return dict(sd)
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise CheckpointError(
        "unrecognized checkpoint layout: expected {'model': state_dict}, a Lightning checkpoint with "
        f"'state_dict', or a plain state dict; found keys {sorted(checkpoint)[:10]}"
    )


def load_teacher(name: str, checkpoint: str | None, num_classes: int = 100, **model_kwargs) -> ZooModel:
    """Build ``name``, load ``checkpoint`` strictly, freeze it and put it in eval mode; its ``weights_file``
    records the file (path and SHA-256)."""
    model = create_model(name, num_classes=num_classes, **model_kwargs)
    if checkpoint is None:
        raise CheckpointError(
            f"model.teacher.checkpoint is not set for teacher {name!r}; {HOW_TO_GET_A_TEACHER}"
        )
    path = Path(checkpoint).expanduser()
    raw = read_checkpoint(path, "teacher checkpoint", weights_only=True, fix=HOW_TO_GET_A_TEACHER)
    state = extract_state_dict(raw)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # raised for shape mismatches, e.g. another number of classes
        raise CheckpointError(
            f"teacher checkpoint {str(path)!r} has tensors of other shapes than {name!r} with {num_classes} "
            f"classes ({str(err).strip().splitlines()[-1].strip()}); check model.teacher.name and the "
            "data set's number of classes"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"teacher checkpoint {str(path)!r} does not match architecture {name!r} with {num_classes} classes: "
            f"missing keys {result.missing_keys[:8]}, unexpected keys {result.unexpected_keys[:8]}; "
            "set model.teacher.name to the architecture the checkpoint was trained with"
        )
    freeze(model)
    model.weights_file = WeightsFile(str(path), file_sha256(path))
    log.info("teacher %s loaded from %s (sha256 %s)", name, path, model.weights_file.sha256[:12])
    return model


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode: a teacher is a fixed function."""
    model.eval()
    model.requires_grad_(False)
    return model


def cast_convolutions(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store a frozen model's convolutions in ``dtype``, the autocast dtype it runs under; returns how many.

    Autocast caches its casts only for weights that require grad, so a frozen teacher's float32
    convolution weights would be cast again at every call: one extra kernel per convolution and step.
    Cast once here they give the same outputs (the same rounding). BatchNorm and linear layers keep
    float32, as autocast gives them (the classifier's float32 weights are the category centers).
    """
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convolutions:
        conv.to(dtype)
    return len(convolutions)

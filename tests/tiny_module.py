"""A DistillationModule of two resnet8s with PCKD's terms by default, and a quiet CPU trainer: what the module's,
the preview schedule's and the gradient share's tests build on."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch

from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.losses import (
    CategoryContrastTerm,
    CenterAlignTerm,
    CrossEntropyTerm,
    FeatureAlignTerm,
    KDTerm,
)
from pckd_lightning.models import create_model
from pckd_lightning.preview import PreviewWeights

NUM_CLASSES = 5


def pckd_terms(preview: bool = True) -> dict:
    return {
        "ce": CrossEntropyTerm(),
        "kd": KDTerm(preview=preview),
        "category_contrast": CategoryContrastTerm(preview=preview),
        "center_align": CenterAlignTerm(),
        "feature_align": FeatureAlignTerm(hidden_factor=2),
    }


def make_module(
    student="resnet8", teacher="resnet8", terms=None, seed=0, teacher_float32=False, **kwargs
) -> DistillationModule:
    """PCKD's terms by default, with the published preview weights when a term is marked preview."""
    torch.manual_seed(seed)
    terms = pckd_terms() if terms is None else terms
    if "preview" not in kwargs and any(term.preview for term in terms.values()):
        kwargs["preview"] = PreviewWeights()
    return DistillationModule(
        student=create_model(student, num_classes=NUM_CLASSES),
        teacher=None if teacher is None else create_model(teacher, num_classes=NUM_CLASSES),
        terms=terms,
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        num_classes=NUM_CLASSES,
        teacher_options=TeacherOptions(measure=False, float32=teacher_float32),
        **kwargs,
    )


def quiet_trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    """A CPU trainer without logger, checkpoints or progress bar."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        **kwargs,
    )

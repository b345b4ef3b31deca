"""The DistillationModule, the training step it calls (and that step as one pure function, for
torch.compile), its option groups and the teacher it freezes."""

from pckd_lightning.distillation.captured import CapturedStep
from pckd_lightning.distillation.module import DistillationModule
from pckd_lightning.distillation.options import Performance, TeacherOptions
from pckd_lightning.distillation.step import DistillStep
from pckd_lightning.distillation.teacher import extract_state_dict, load_teacher

__all__ = [
    "CapturedStep",
    "DistillStep",
    "DistillationModule",
    "Performance",
    "TeacherOptions",
    "extract_state_dict",
    "load_teacher",
]

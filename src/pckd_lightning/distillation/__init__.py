"""The DistillationModule and the teacher it freezes."""

from pckd_lightning.distillation.module import DistillationModule
from pckd_lightning.distillation.teacher import extract_state_dict, load_teacher

__all__ = ["DistillationModule", "extract_state_dict", "load_teacher"]

"""The DistillationModule's option groups, as ``conf/train.yaml``'s ``performance`` and ``teacher`` declare them."""

from __future__ import annotations

from dataclasses import dataclass

from pckd_lightning.errors import ConfigError

#: torch.compile's modes (None: its default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Performance:
    """Speed options; none changes what is computed beyond floating-point rounding."""

    #: NHWC memory layout for student and teacher (faster convolutions on GPUs with bf16/fp16)
    channels_last: bool = False
    #: torch.compile the student and the teacher, in place (checkpoints keep their parameter names)
    compile: bool = False
    #: torch.compile the loss terms: fewer, fused kernels where launching them bounds the step
    compile_losses: bool = False
    #: torch.compile's mode for both (None: its default; reduce-overhead records CUDA graphs)
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(
                f"performance.compile_mode={self.compile_mode!r} is not a torch.compile mode; valid values: "
                f"{', '.join(map(str, COMPILE_MODES))} (reduce-overhead records CUDA graphs)"
            )


@dataclass(frozen=True)
class TeacherOptions:
    """How the frozen teacher is checked and run."""

    #: stop when the loaded teacher's val top-1 (%) is below this (a wrong or untrained checkpoint)
    min_accuracy: float | None = None
    #: under mixed precision run the teacher in float32 instead of the student's autocast (numerics checks)
    float32: bool = False
    #: score the teacher on the validation split when fitting starts (logged as teacher/val_top1)
    measure: bool = True
    #: a folder for the teacher's outputs per (epoch, image, view), written by the first run of a sweep and
    #: read by the others instead of running the teacher (:mod:`pckd_lightning.distillation.teacher_cache`)
    cache: str | None = None
    #: the most the cache may take on disk, in GiB (refused before any work when it would take more)
    cache_max_gib: float = 8.0

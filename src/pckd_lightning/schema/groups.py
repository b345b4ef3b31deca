"""One model per option group of the run config: every key a run reads, with the values it accepts.

A field left out of a config (a data set without ``image_size``), set to null, or interpolated
(``data.views: ${distill.views}``, checked where it points) is not checked; see
:func:`pckd_lightning.schema.config.validate`. ``docs/config-checks.md`` lists these fields.
"""

from __future__ import annotations

from pydantic import Field

from pckd_lightning.data.base import VAL_SOURCES
from pckd_lightning.distillation.module import LR_SCALINGS
from pckd_lightning.distillation.options import COMPILE_MODES
from pckd_lightning.preview.config import EVERY_TERM, PreviewOptions
from pckd_lightning.schema.fields import (
    Bool,
    Group,
    Int,
    IntList,
    NullableStr,
    Number,
    OneOf,
    Options,
    Str,
    StrList,
)

#: precisions Lightning's Trainer accepts (as written in a config)
PRECISIONS = (
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)
#: accelerators Lightning's Trainer accepts
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class ResumeOptions(Group):
    allow_changes: StrList | None = None


class PerformanceOptions(Group):
    channels_last: Bool | None = None
    compile: Bool | None = None
    compile_losses: Bool | None = None
    compile_mode: OneOf(COMPILE_MODES) | None = None


class TeacherOptions(Group):
    min_accuracy: Number(0, 100, nullable=True) | None = None
    float32: Bool | None = None
    measure: Bool | None = None
    cache: NullableStr | None = None
    cache_max_gib: Number(0, low_open=True) | None = None


class ModuleOptions(Group):
    performance: PerformanceOptions | None = None
    teacher_options: TeacherOptions | None = None
    sync_batchnorm: Bool | None = None
    lr_scaling: OneOf(LR_SCALINGS) | None = None
    finite_check_every_n_steps: Int(1) | None = None


class DataOptions(Group):
    batch_size: Int(1) | None = None
    num_workers: Int(0) | None = None
    views: Int(1) | None = None
    image_size: Int(1) | None = None
    train_per_class: Int(1, nullable=True) | None = None
    val_per_class: Int(1, nullable=True) | None = None
    class_subset: Int(2, nullable=True) | None = None
    split_seed: Int() | None = None
    aug_seed: Int(nullable=True) | None = None
    download: Bool | None = None
    val_source: OneOf(VAL_SOURCES) | None = None
    holdout_per_class: Int(1) | None = None


class RoleOptions(Group):
    """A model of the pair (``model.teacher``, ``model.student``): the keys every kind of model shares; the
    rest are the architecture's own keyword arguments, checked when it is built."""

    name: Str | None = None
    checkpoint: NullableStr | None = None
    kwargs: Options | None = None
    taps: Options | None = None


class ModelOptions(Group):
    teacher: RoleOptions | None = None
    student: RoleOptions | None = None


class TermOptions(Group):
    """The options every loss term shares; a term's own options are checked by its constructor."""

    weight: Number(0) | None = None
    temperature: Number(0, low_open=True) | None = None
    warmup_epochs: Int(0) | None = None
    preview: Bool | None = None


class DistillOptions(Group):
    views: Int(1) | None = None
    terms: dict[str, TermOptions] | None = None
    preview: PreviewOptions | None = None
    every_term: Bool | None = Field(None, alias=EVERY_TERM)


class OptimizerOptions(Group):
    lr: Number(0, low_open=True) | None = None
    momentum: Number(0, 1) | None = None
    weight_decay: Number(0) | None = None


class SchedulerOptions(Group):
    milestones: IntList | None = None
    gamma: Number(0, low_open=True) | None = None
    T_max: Int(1) | None = None
    eta_min: Number(0) | None = None


class TrainerOptions(Group):
    max_epochs: Int(1) | None = None
    precision: OneOf(PRECISIONS) | None = None
    accelerator: OneOf(ACCELERATORS) | None = None
    num_nodes: Int(1) | None = None
    log_every_n_steps: Int(1) | None = None
    check_val_every_n_epoch: Int(1) | None = None


class LoggerOptions(Group):
    log_every_n_steps: Int(1, nullable=True) | None = None


class RunConfig(Group):
    """The whole run config (``conf/train.yaml`` composed), group by group."""

    seed: Int() | None = None
    task_name: Str | None = None
    tags: StrList | None = None
    ckpt_path: NullableStr | None = None
    export_path: NullableStr | None = None
    resume: ResumeOptions | None = None
    print_config: Bool | None = None
    module: ModuleOptions | None = None
    model: ModelOptions | None = None
    data: DataOptions | None = None
    distill: DistillOptions | None = None
    optimizer: OptimizerOptions | None = None
    scheduler: SchedulerOptions | None = None
    lr_milestones: IntList | None = None
    trainer: TrainerOptions | None = None
    logger: LoggerOptions | None = None

"""One distillation step, ``context → losses → total``: the single owner of what a training step computes.

The DistillationModule calls it from ``training_step``; init stages, GradientShare, DOT, the benchmarks
and the notebooks use the same public methods, so a step measured or inspected is the step trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from pckd_lightning.distillation.options import Performance, TeacherOptions
from pckd_lightning.distillation.teacher_cache import TeacherCache
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.models import ModelOutput, ZooModel
from pckd_lightning.preview import PreviewWeights, check_marked


class StepParts(Protocol):
    """The one holder of the networks and the terms a step computes with (the DistillationModule, which
    registers, optimizes and checkpoints them): what it holds now is what the next step uses."""

    student: ZooModel
    terms: nn.ModuleDict
    teacher: ZooModel | None
    #: the 0-indexed training epoch (the teacher cache's rows are per epoch)
    current_epoch: int


class DistillStep:
    """The teacher's and the student's forward passes, each term's value and ``Σ weight_k · term_k``.

    ``preview`` weights the per-image values of the terms marked ``preview: true`` by the difficulty of each
    image (view 0's cross-entropy); a term marked so without ``preview`` is refused. The student, the terms
    and the teacher are read from ``parts`` at each use, never copied: a BatchNorm conversion or a term
    removed there is what the step computes with.
    """

    def __init__(
        self,
        parts: StepParts,
        preview: PreviewWeights | None = None,
        performance: Performance | None = None,
        teacher_options: TeacherOptions | None = None,
        teacher_cache: TeacherCache | None = None,
    ) -> None:
        self.parts = parts
        #: the teacher's stored outputs: rows filled earlier are read instead of running the teacher
        self.teacher_cache = teacher_cache
        self.preview = preview
        self.performance = performance or Performance()
        self.teacher_options = teacher_options or TeacherOptions()
        check_marked(self.preview_terms, preview)

    @property
    def student(self) -> ZooModel:
        return self.parts.student

    @property
    def terms(self) -> nn.ModuleDict:
        return self.parts.terms

    @property
    def teacher(self) -> ZooModel | None:
        return self.parts.teacher

    @property
    def preview_terms(self) -> list[str]:
        """The names of the terms marked ``preview``."""
        return [name for name, term in self.terms.items() if term.preview]

    def teacher_forward(self, images: torch.Tensor, **kwargs: Any) -> Any:
        """The frozen teacher's forward: under the run's autocast, or in float32 if ``TeacherOptions.float32``."""
        if not self.teacher_options.float32:
            return self.teacher(images, **kwargs)
        with torch.autocast(images.device.type, enabled=False):
            return self.teacher(images.float(), **kwargs)

    def teacher_outputs(self, images: torch.Tensor, indices: torch.Tensor) -> ModelOutput:
        """The teacher's outputs for ``images`` (the views of ``indices``, image-major): from the cache where this
        epoch's rows are filled, else from its forward pass (then stored). With a cache, every run of a sweep
        reads the float16-rounded values, the one that wrote them too."""
        cache = self.teacher_cache
        if cache is None:
            return self.teacher_forward(images, with_features=True)
        epoch = self.parts.current_epoch
        rows = indices.cpu()  # one read-back per step (the loader's indices are on the device by now)
        if cache.filled(epoch, rows):
            stored = cache.read(epoch, rows)
            return ModelOutput(
                stages=[], **{k: v.to(images.device, torch.float32) for k, v in stored.items()}
            )
        out = self.teacher_forward(images, with_features=True)
        rounded = {name: getattr(out, name).half() for name in cache.layout.outputs}
        cache.write(epoch, rows, rounded)
        return ModelOutput(stages=out.stages, **{k: v.float() for k, v in rounded.items()})

    def context(self, batch: tuple[torch.Tensor, ...]) -> DistillContext:
        """The forward passes of a training batch ``(images, labels, indices)``, as the loss terms read them."""
        images, labels, indices = batch
        num_views = images.shape[1] if images.ndim == 5 else 1
        if images.ndim == 5:
            images = images.flatten(0, 1)  # image-major: image 0 views 0..V-1, image 1 ...
            labels = labels.repeat_interleave(num_views)
        if self.performance.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_out = None
        if self.teacher is not None:  # first: its activations are freed before the student's are kept
            with torch.no_grad():
                teacher_out = self.teacher_outputs(images, indices)
        student_out = self.student(images, with_features=True)
        return DistillContext(
            student=student_out,
            teacher=teacher_out,
            labels=labels,
            student_model=self.student,
            teacher_model=self.teacher,
            num_views=num_views,
            indices=indices,
        )

    def losses(self, ctx: DistillContext, record: bool = True) -> dict[str, torch.Tensor]:
        """Each term's (preview-weighted) value, before its weight and warm-up; ``ctx`` holds all views, each
        term gets the ones it reads.

        ``record=False`` leaves the batch out of the preview weights' epoch statistics (a measurement).
        """
        first = ctx.first_view()
        weights = None
        if self.preview is not None and self.preview_terms:
            weights = self.preview(first.cross_entropy, record=record)
        losses = {}
        for name, term in self.terms.items():
            term_ctx = ctx if term.views == "all" else first
            value = term(term_ctx)
            if value.ndim == 1:
                if term.preview and weights is not None:
                    views = term_ctx.num_views
                    value = value * (weights if views == 1 else weights.repeat_interleave(views))
                value = value.mean()
            losses[name] = value
        return losses

    def weighted(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each term's share of the total, ``weight_k · warm-up_k · loss_k`` (:meth:`LossTerm.weighted`)."""
        return {name: self.terms[name].weighted(value) for name, value in losses.items()}

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``Σ weight_k · warm-up_k · loss_k``. Unit factors multiply nothing: on a GPU each operation is a
        kernel launch."""
        weighted = list(self.weighted(losses).values())
        return sum(weighted[1:], start=weighted[0])

    def __call__(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[DistillContext, dict[str, torch.Tensor], torch.Tensor]:
        """The whole step on ``batch``: its context, each term's value and the total loss."""
        ctx = self.context(batch)
        losses = self.losses(ctx)
        return ctx, losses, self.total(losses)

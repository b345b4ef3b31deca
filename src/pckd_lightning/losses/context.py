"""What one training step exposes to the loss terms: both models' outputs on the same images."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pckd_lightning.models.base import ModelOutput, ZooModel


def first_view(x: torch.Tensor, num_views: int) -> torch.Tensor:
    """Keep view 0 of an image-major flattened batch ([B·V, ...] -> [B, ...])."""
    return x if num_views == 1 else x.unflatten(0, (-1, num_views))[:, 0]


def _first_view_output(out: ModelOutput, num_views: int) -> ModelOutput:
    return ModelOutput(
        stages=[first_view(s, num_views) for s in out.stages],
        pooled=None if out.pooled is None else first_view(out.pooled, num_views),
        logits=first_view(out.logits, num_views),
    )


@dataclass(eq=False)
class DistillContext:
    """Student and teacher outputs for the samples a term reads, with their labels.

    ``num_views`` is the number of views per image in this context (1 after :meth:`first_view`).
    ``indices`` are the images' dataset indices (one per image, not per view).
    """

    student: ModelOutput
    teacher: ModelOutput | None
    labels: torch.Tensor
    student_model: ZooModel
    teacher_model: ZooModel | None
    num_views: int = 1
    indices: torch.Tensor | None = None
    _first: DistillContext | None = field(default=None, repr=False)
    _cross_entropy: torch.Tensor | None = field(default=None, repr=False)

    @property
    def cross_entropy(self) -> torch.Tensor:
        """The student's per-sample cross-entropy, shared by the CE term and the preview weighting.

        Cached by hand: ``functools.cached_property`` takes a lock on Python 3.11, which breaks the graph of
        a compiled loss path.
        """
        if self._cross_entropy is None:
            self._cross_entropy = F.cross_entropy(self.student.logits.float(), self.labels, reduction="none")
        return self._cross_entropy

    def first_view(self) -> DistillContext:
        """The same context restricted to view 0 of each image (cached, so shared by all terms)."""
        if self.num_views == 1:
            return self
        if self._first is None:
            self._first = DistillContext(
                student=_first_view_output(self.student, self.num_views),
                teacher=None if self.teacher is None else _first_view_output(self.teacher, self.num_views),
                labels=first_view(self.labels, self.num_views),
                student_model=self.student_model,
                teacher_model=self.teacher_model,
                num_views=1,
                indices=self.indices,
            )
        return self._first

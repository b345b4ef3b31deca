"""Contrastive Representation Distillation (Tian et al., ICLR 2020) with its memory bank of embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.distributed import gather, global_mean
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms._common import check_count, check_positive, full_precision
from pckd_lightning.losses.terms.base import LossTerm, PairInfo
from pckd_lightning.models.base import Capability
from pckd_lightning.schema.fields import Number, require

MODES = ("exact",)
NEGATIVES = ("other_class", "uniform")


def nce_loss(scores: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """Per-sample NCE loss of normalized scores [B, 1 + K] (column 0 the positive), shape [B].

    With the noise probability P_n = 1/N: −log(P_0 / (P_0 + K·P_n)) − Σ_k log(K·P_n / (P_k + K·P_n)).
    """
    k = scores.shape[1] - 1
    noise = k / num_data
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    negatives = torch.log(noise / (scores[:, 1:] + noise + eps)).sum(dim=1)
    return -(positive + negatives)


class CRDTerm(LossTerm):
    """CRD between the pooled features, per image: both directions of the NCE contrast.

    Owns trainable embeddings (Linear to ``feat_dim`` then L2-normalization) for the student and the
    teacher, and two memory banks of ``num_data × feat_dim`` embeddings (buffers, checkpointed): the
    student anchor is contrasted against the teacher bank and vice versa. Each image's positive is its
    own bank entry (the "exact" mode, read from ``ctx.indices``); its ``nce_k`` negatives are drawn
    uniformly from the bank and, with "other_class" (as the benchmark's sampler), redrawn
    ``max_redraws`` times where they hit an image of the anchor's class or the image itself (labels
    are learnt as images are seen, or given at once with :meth:`set_dataset_labels`); "uniform" keeps
    the first draw. The banks are updated with momentum ``nce_m`` after the loss is computed, in
    training mode only. The normalization constants Z are fixed from the first batch, as in the
    reference. The updates are not gathered across processes: under DDP (whose default buffer
    broadcast makes rank 0's banks win) only rank 0's images would refresh the banks.

    Published (CRD benchmark, mdistiller): feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5, exact mode,
    weight 0.8, CE weight 1. ``num_data`` is the number of training images (50000 for CIFAR-100); it
    may be left None at construction and set (``term.num_data = n``) before :meth:`build`, which
    creates the banks.
    """

    requires = frozenset({Capability.EMBEDDING})

    def __init__(
        self,
        num_data: int | None = None,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
        mode: str = "exact",
        negatives: str = "other_class",
        max_redraws: int = 4,
        weight: float = 0.8,
        preview: bool = False,
    ) -> None:
        super().__init__(weight=weight, preview=preview)
        name = type(self).__name__
        #: the number of training images (the bank size); None until the runner or the config sets it
        self.num_data = None if num_data is None else check_count(name, "num_data", num_data, minimum=2)
        self.feat_dim = check_count(name, "feat_dim", feat_dim, minimum=1)
        self.nce_k = check_count(name, "nce_k", nce_k, minimum=1)
        self.nce_t = check_positive(name, "nce_t", nce_t)
        self.nce_m = float(require(Number(0, 1, high_open=True), nce_m, name, "nce_m (the bank momentum)"))
        if mode not in MODES:
            raise ConfigError(f"{name}: mode={mode!r} is not supported; valid values: {', '.join(MODES)}")
        if negatives not in NEGATIVES:
            raise ConfigError(
                f"{name}: negatives={negatives!r} is unknown; valid values: {', '.join(NEGATIVES)}"
            )
        self.mode = mode
        self.negatives = negatives
        self.max_redraws = check_count(name, "max_redraws", max_redraws)
        self._normalizers_set = False  # a host-side flag, so that later steps need not read the buffer
        self._indices_checked = False

    def build(self, pair: PairInfo) -> None:
        super().build(pair)
        if self.num_data is None and pair.train_labels is not None:
            self.num_data = len(pair.train_labels)
        if self.num_data is None:
            raise ConfigError(
                "CRDTerm: num_data (the number of training images, the size of its memory bank) is not set; "
                "set distill.terms.<name>.num_data (50000 for CIFAR-100) or build the module with train_labels"
            )
        self.num_data = check_count("CRDTerm", "num_data", self.num_data, minimum=2)
        bound = 1.0 / math.sqrt(self.feat_dim / 3)
        for bank in ("memory_student", "memory_teacher"):
            self.register_buffer(bank, torch.empty(self.num_data, self.feat_dim).uniform_(-bound, bound))
        #: Z of the student-anchor and teacher-anchor scores; negative until the first batch sets them
        self.register_buffer("normalizers", torch.full((2,), -1.0))
        #: the class of each bank entry, -1 while unknown
        self.register_buffer("bank_labels", torch.full((self.num_data,), -1, dtype=torch.long))
        self.embed_student = nn.Linear(pair.student_dim, self.feat_dim)
        self.embed_teacher = nn.Linear(pair.teacher_dim, self.feat_dim)
        if pair.train_labels is not None:
            self.set_dataset_labels(pair.train_labels)

    @torch.no_grad()
    def set_dataset_labels(self, labels: torch.Tensor) -> None:
        """Give every bank entry its class at once (the training set's labels in dataset-index order)."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != self.bank_labels.shape:
            raise ConfigError(
                f"CRDTerm: got {labels.numel()} labels for a bank of num_data={self.num_data} entries; "
                "set distill.terms.<name>.num_data to the number of training images"
            )
        self.bank_labels.copy_(labels.to(self.bank_labels.device))

    @torch.no_grad()
    def sample_contrast(self, indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Bank indices [B, 1 + K]: column 0 the images themselves, then K negatives each."""
        b, device = indices.shape[0], indices.device
        negatives = torch.randint(0, self.num_data, (b, self.nce_k), device=device)
        if self.negatives == "other_class":
            # a fixed number of redraws, so that sampling never waits for the device
            for _ in range(self.max_redraws):
                clash = (self.bank_labels[negatives] == labels[:, None]) | (negatives == indices[:, None])
                redraw = torch.randint(0, self.num_data, negatives.shape, device=device)
                negatives = torch.where(clash, redraw, negatives)
        return torch.cat([indices[:, None], negatives], dim=1)

    @torch.no_grad()
    def _update_memory(self, indices: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        for bank, v in ((self.memory_student, v_s), (self.memory_teacher, v_t)):
            mixed = bank[indices] * self.nce_m + v.detach().to(bank.dtype) * (1 - self.nce_m)
            bank.index_copy_(0, indices, F.normalize(mixed, dim=1))

    def forward(self, ctx: DistillContext) -> torch.Tensor:
        if ctx.indices is None:
            raise ConfigError("CRDTerm needs the images' dataset indices (ctx.indices); the batch has none")
        indices = ctx.indices.to(device=self.memory_student.device, dtype=torch.long).view(-1)
        # checked on the first step only, where reading the device does not cost every step; the app
        # also checks num_data against the training set when the term is built
        if not self._indices_checked and bool(((indices < 0) | (indices >= self.num_data)).any()):
            raise ConfigError(
                f"CRDTerm: dataset indices {indices.tolist()} go outside the bank of "
                f"num_data={self.num_data}; "
                "set distill.terms.<name>.num_data to the number of training images"
            )
        self._indices_checked = True
        labels = ctx.labels.to(indices.device).view(-1)
        if self.training:  # every rank writes every rank's samples, so the banks stay identical under DDP
            with torch.no_grad():
                self.bank_labels[gather(indices)] = gather(labels)
        v_s = F.normalize(self.embed_student(ctx.student.pooled).float(), dim=1)
        v_t = F.normalize(self.embed_teacher(ctx.teacher.pooled.detach()).float(), dim=1)
        sample = self.sample_contrast(indices, labels)
        # student anchors against the teacher bank, teacher anchors against the student bank
        with full_precision(v_s):
            scores_s = torch.exp(
                torch.einsum("bkd,bd->bk", self.memory_teacher[sample].float(), v_s) / self.nce_t
            )
            scores_t = torch.exp(
                torch.einsum("bkd,bd->bk", self.memory_student[sample].float(), v_t) / self.nce_t
            )
        if not self._normalizers_set:
            with torch.no_grad():
                unset = self.normalizers < 0
                first = torch.stack([global_mean(scores_s), global_mean(scores_t)]) * self.num_data
                self.normalizers.copy_(torch.where(unset, first, self.normalizers))
            self._normalizers_set = True
        loss = nce_loss(scores_s / self.normalizers[0], self.num_data) + nce_loss(
            scores_t / self.normalizers[1], self.num_data
        )
        if self.training:
            self._update_memory(gather(indices), gather(v_s.detach()), gather(v_t.detach()))
        return loss

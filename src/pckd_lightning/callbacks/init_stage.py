"""The initialization stage of two-stage baselines (AB, FSP, FT) as a Lightning callback.

Before the first training epoch, the CRD benchmark (HobbitLong/RepDistiller, ``helper/pretrain.py``)
trains some parts of the pair with a method-specific loss for ``init_epochs`` epochs: AB trains the
student's feature layers and connectors, FSP the student's feature layers, FT the teacher's
paraphraser. The main training then starts from there, with its own optimizer.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from pckd_lightning.distributed import world_size
from pckd_lightning.errors import ConfigError
from pckd_lightning.modes import eval_mode
from pckd_lightning.schema.fields import Int, Number, accepts, require

log = logging.getLogger(__name__)


def _optional_number(option: str, value: object, low: float, low_inclusive: bool, high: float | None = None):
    if value is None:
        return None
    if not accepts(Number(low, high, low_open=not low_inclusive, high_open=True), value):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + ("" if high is None else f" and < {high}")
        raise ConfigError(
            f"InitStage: {option} must be null (take it from the run's optimizer) or a number {bound}, "
            f"got {value!r}; set distill.callbacks.init_stage.{option}"
        )
    return float(value)


def init_stage_terms(module: L.LightningModule) -> dict[str, nn.Module]:
    """The module's loss terms that have an initialization stage (they define ``init_loss``)."""
    terms = getattr(module, "terms", {})
    return {name: t for name, t in terms.items() if callable(getattr(t, "init_loss", None))}


class InitStage(L.Callback):
    """Runs the init stage of every loss term that defines ``init_loss(ctx)``, once, before the first epoch.

    For ``init_epochs`` epochs over ``trainer.datamodule.train_dataloader()``, on the module's device and
    precision, it minimizes the sum of the terms' ``init_loss`` with a plain SGD over the union of their
    ``init_parameters(student)``; the terms' ``init_modules(student)`` are in train mode, everything else
    (the rest of the student, the teacher) in eval mode, as in the reference. ``lr``, ``momentum`` and
    ``weight_decay`` left null are read from the run's optimizer (the reference uses the run's values and
    a constant lr). Modes and ``requires_grad`` flags are restored afterwards and each term is marked
    initialized (a buffer saved in checkpoints).

    Debug runs shorten it like the main loop: ``fast_dev_run`` runs one init epoch, and
    ``limit_train_batches`` caps the batches of every init epoch.

    It runs at ``on_train_start``: after the module's ``on_fit_start`` has checked the teacher's accuracy
    (a wrong teacher fails before the init stage, not after it) and after Lightning has restored a resumed
    run's progress. Nothing runs on a resume (``ckpt_path`` given, or a trainer past epoch 0 / step 0): the
    trained state comes from the checkpoint. Under DDP every rank runs the stage on the full training set, then rank 0's result is
    broadcast, so all ranks start the main training identical.
    """

    def __init__(
        self,
        init_epochs: int = 30,
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        log_every_n_steps: int = 50,
    ) -> None:
        self.init_epochs = require(
            Int(0),
            init_epochs,
            "InitStage",
            "init_epochs",
            note=" (published 30; 0 skips the stage)",
            fix="; set distill.callbacks.init_stage.init_epochs",
        )
        require(Int(1), log_every_n_steps, "InitStage", "log_every_n_steps")
        self.lr = _optional_number("lr", lr, 0.0, low_inclusive=False)
        self.momentum = _optional_number("momentum", momentum, 0.0, low_inclusive=True, high=1.0)
        self.weight_decay = _optional_number("weight_decay", weight_decay, 0.0, low_inclusive=True)
        self.log_every_n_steps = log_every_n_steps
        #: mean init loss of each epoch (of the last run of the stage), for logs and tests
        self.history: list[float] = []

    # -- hook ----------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        terms = init_stage_terms(pl_module)
        if not terms:
            rank_zero_warn("InitStage: no loss term defines init_loss, so there is no init stage to run")
            return
        if trainer.ckpt_path is not None or trainer.current_epoch > 0 or trainer.global_step > 0:
            rank_zero_info("InitStage: resumed run, the init stage's result comes from the checkpoint")
            return
        pending = {name: t for name, t in terms.items() if not bool(getattr(t, "initialized", False))}
        if not pending:
            return
        if self.init_epochs == 0:
            rank_zero_warn(
                f"InitStage: init_epochs=0, the init stage of {sorted(pending)} is skipped on purpose"
            )
        else:
            self.run(trainer, pl_module, pending)
        for term in pending.values():
            mark = getattr(term, "mark_initialized", None)
            if mark is not None:
                mark()

    # -- the stage -----------------------------------------------------------------------------------

    def _hyperparameters(self, trainer: L.Trainer) -> dict[str, float]:
        group: dict[str, Any] = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
        values = {
            "lr": self.lr if self.lr is not None else group.get("initial_lr", group.get("lr")),
            "momentum": self.momentum if self.momentum is not None else group.get("momentum", 0.0),
            "weight_decay": self.weight_decay
            if self.weight_decay is not None
            else group.get("weight_decay", 0.0),
        }
        if values["lr"] is None:
            raise ConfigError(
                "InitStage: the run has no optimizer to take lr from; set distill.callbacks.init_stage.lr"
            )
        return {k: float(v) for k, v in values.items()}

    def _parameters(self, pl_module: L.LightningModule, terms: dict[str, nn.Module]) -> list[nn.Parameter]:
        teacher = getattr(pl_module, "teacher", None)
        frozen = {id(p) for p in teacher.parameters()} if teacher is not None else set()
        params: dict[int, nn.Parameter] = {}
        for name, term in terms.items():
            for p in term.init_parameters(pl_module.student):
                if id(p) in frozen:
                    raise RuntimeError(f"InitStage: loss term {name} asks to train a teacher parameter")
                params[id(p)] = p
        if not params:
            raise RuntimeError(f"InitStage: the loss terms {sorted(terms)} name no parameter to train")
        return list(params.values())

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, terms: dict[str, nn.Module]) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            raise ConfigError(
                "InitStage needs the training data as a LightningDataModule: call "
                "trainer.fit(module, datamodule=...) (the runner does)"
            )
        hp = self._hyperparameters(trainer)
        epochs = 1 if trainer.fast_dev_run else self.init_epochs
        params = self._parameters(pl_module, terms)
        trainable = [(p, p.requires_grad) for p in params]
        use_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        scaler = torch.amp.GradScaler(pl_module.device.type) if use_scaler else None
        optimizer = torch.optim.SGD(
            params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
        rank_zero_info(
            f"InitStage: {epochs} epoch(s) for {sorted(terms)} on {pl_module.device}, training "
            f"{sum(p.numel() for p in params):,} parameters (SGD lr {hp['lr']:g}, momentum {hp['momentum']:g}, "
            f"weight decay {hp['weight_decay']:g})"
        )
        loader = datamodule.train_dataloader()
        self.history = []
        try:
            for p in params:
                p.requires_grad_(True)
            with eval_mode(pl_module):
                for term in terms.values():
                    for m in term.init_modules(pl_module.student):
                        m.train()
                with torch.enable_grad():
                    for epoch in range(1, epochs + 1):
                        mean = self._epoch(
                            trainer, pl_module, terms, loader, optimizer, scaler, epoch, epochs
                        )
                        self.history.append(mean)
        finally:
            for p, flag in trainable:
                p.requires_grad_(flag)
                p.grad = None
            del loader
        self._broadcast(pl_module, terms)
        for logger in trainer.loggers:
            logger.log_metrics({"init/loss": self.history[-1], "init/epochs": float(epochs)}, step=0)

    @staticmethod
    def _batch_limit(trainer: L.Trainer, loader: Any) -> int | None:
        """Lightning's ``limit_train_batches`` (an int: that many; a float: that fraction), or None."""
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            return limit
        if limit is None or limit >= 1.0:
            return None
        return max(1, int(len(loader) * limit))

    def _epoch(self, trainer, pl_module, terms, loader, optimizer, scaler, epoch: int, epochs: int) -> float:
        """One pass over the loader; returns the epoch's mean init loss (summed over the terms)."""
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch - 1)
        start = time.perf_counter()
        limit = self._batch_limit(trainer, loader)
        sums: torch.Tensor | None = None  # per term, kept on the device: no host sync per step
        count = 0
        for step, batch in enumerate(loader, start=1):
            if limit is not None and step > limit:
                break
            batch = trainer.strategy.batch_to_device(batch, pl_module.device)
            with trainer.precision_plugin.forward_context():
                ctx = pl_module.step.context(batch)
                first = ctx.first_view()
                parts = [term.init_loss(ctx if term.views == "all" else first) for term in terms.values()]
            loss = sum(parts)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            values = torch.stack([v.detach().float() for v in parts])
            sums = values if sums is None else sums + values
            count += 1
            if step % self.log_every_n_steps == 0:
                log.debug("InitStage: epoch %d step %d loss %.4g", epoch, step, float(loss.detach()))
        if sums is None:
            raise ConfigError("InitStage: the training dataloader is empty")
        means = dict(zip(terms, (sums / count).tolist(), strict=True))
        total = sum(means.values())
        if not math.isfinite(total):
            raise FloatingPointError(
                f"InitStage: the init loss became non-finite in epoch {epoch} ({means}); lower "
                "distill.callbacks.init_stage.lr"
            )
        detail = ", ".join(f"{k} {v:.4g}" for k, v in means.items())
        rank_zero_info(
            f"InitStage: epoch {epoch}/{epochs}  loss {total:.4g} ({detail})  {time.perf_counter() - start:.1f}s"
        )
        return total

    @staticmethod
    def _broadcast(pl_module: L.LightningModule, terms: dict[str, nn.Module]) -> None:
        """Under DDP, give every rank rank 0's trained parameters and buffers (e.g. BatchNorm statistics)."""
        if world_size() == 1:
            return
        tensors: dict[int, torch.Tensor] = {}
        for term in terms.values():
            for p in term.init_parameters(pl_module.student):
                tensors[id(p)] = p.data
            for m in term.init_modules(pl_module.student):
                for b in m.buffers():
                    tensors[id(b)] = b
        for t in tensors.values():
            dist.broadcast(t, src=0)

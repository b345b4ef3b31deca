"""Cross-group consistency of a composed config, which no single group can check by itself (after
:func:`pckd_lightning.schema.config.validate`, before any work)."""

from __future__ import annotations

from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig

from pckd_lightning import preview
from pckd_lightning.data import GPUResidentCIFAR100DataModule
from pckd_lightning.errors import ConfigError


def check_strategy(trainer_cfg: DictConfig) -> None:
    """Refuse DDP strategies that start their workers from this process (``ddp_spawn``, ``ddp_notebook``,
    ``ddp_fork``): this process writes the summary, the CSV log and the exported student, but does not train,
    so its summary would say 0 epochs and its logger would overwrite the workers' ``metrics.csv``."""
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, DictConfig):
        name, start_method = strategy.get("_target_"), strategy.get("start_method", "popen")
    else:
        registered = dict.get(StrategyRegistry, strategy, {})  # the entry; StrategyRegistry.get builds one
        name = strategy
        start_method = registered.get("init_params", {}).get("start_method", "popen")
    if start_method != "popen":
        raise ConfigError(
            f"trainer.strategy={name} starts its DDP workers from this process (start_method={start_method}); "
            "the run's summary and logs are written by this process, which does not train, so they would be "
            "wrong or lost. Use trainer.strategy=ddp: pckd-train then starts one process per device "
            "(e.g. trainer=ddp_cpu, or trainer.devices=2); in a notebook, train on one device"
        )


def check_config(cfg: DictConfig) -> None:
    """Cross-group consistency that no single group can check by itself (after ``validate``)."""
    check_strategy(cfg.trainer)
    preview.check(cfg)  # the preview weights' schedule must stay finite over trainer.max_epochs
    data_views, method_views = cfg.data.get("views"), cfg.distill.get("views")
    if data_views is not None and method_views is not None and data_views != method_views:
        raise ConfigError(
            f"data.views={data_views} but distill={cfg.distill.get('name')} expects views={method_views}; "
            "leave data.views at its default (${distill.views}) or set both to the same value"
        )


def check_world(datamodule: object, world_size: int) -> None:
    """Refuse a data module that cannot give each DDP process its share (called once the trainer is built,
    the first moment the world size is known, before any work): Lightning splits a DataLoader by a
    distributed sampler, but not the device-resident path's loader, so every rank would train on the same
    batches."""
    if world_size > 1 and isinstance(datamodule, GPUResidentCIFAR100DataModule):
        raise ConfigError(
            f"data=cifar100_gpu runs on one device, but this run has {world_size} processes: every rank would "
            "train on the same batches (Lightning cannot split a loader made on the device). Use "
            "data=cifar100 under DDP, or trainer.devices=1"
        )

"""``pckd-eval``: top-1/top-5 of a checkpoint on a validation split, and optional export.

Examples::

    # a run folder's student: the architecture and the data (split, image size, seed) come from
    # <run>/config.yaml, which sits next to student.pth or above checkpoints/*.ckpt
    pckd-eval --checkpoint outputs/train/runs/<date>/student.pth
    pckd-eval --checkpoint outputs/train/runs/<date>/checkpoints/last.ckpt

    # a published teacher ({"model": state_dict}) on the real CIFAR-100 test split
    pckd-eval --checkpoint save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --arch resnet32x4 \\
        --data cifar100 --data-root ../shared/data

    # export as well (torchscript | onnx | state_dict); --no-eval to export only
    pckd-eval --checkpoint RUN/student.pth --export onnx --out student.onnx

Checkpoints: ``{"model": state_dict}`` (``student.pth``, published teachers), a Lightning ``.ckpt`` of a
:class:`~pckd_lightning.distillation.DistillationModule` (its student's weights are used) or a plain state
dict; see :func:`~pckd_lightning.distillation.teacher.extract_state_dict`. Weights are loaded strictly.

Data: ``--data NAME`` composes ``conf/data/NAME.yaml`` (``--data-root`` sets ``data.root``: the folder
holding ``cifar-100-python`` for cifar100, the folder holding ``train/`` and ``val/`` for imagefolder). Without
``--data``, the run's ``config.yaml`` supplies the data section, so the held-out images are the run's own
(chosen by ``data.split_seed``, 0 unless the run changed it).

From Python (notebooks)::

    from pckd_lightning.evaluate import evaluate
    evaluate(model, datamodule.val_dataloader())   # {"top1": 97.5, "top5": 100.0}, in percent
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pckd_lightning.devices import resolve_device
from pckd_lightning.distillation.checkpoint_io import read_checkpoint
from pckd_lightning.distillation.teacher import extract_state_dict
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.export import EXPORT_FORMATS, export_model
from pckd_lightning.models import create_model, model_config, model_name
from pckd_lightning.models.base import ModelOutput
from pckd_lightning.modes import eval_mode
from pckd_lightning.paths import CONFIG_DIR
from pckd_lightning.run_folder import read_run_config

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataloader: Iterable, device: str | torch.device | None = None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) of ``model`` over ``dataloader``.

    Batches are ``(x, y, ...)`` (the data modules' ``(x, y, idx)`` included); ``x`` of shape ``[B, V, C,
    H, W]`` is evaluated on its first view. ``device``: where to run (default: the model's device). The
    model is put in eval mode and every submodule's mode restored afterwards. Top-5 is
    top-``min(5, num_classes)``.
    """
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (param.device if param is not None else "cpu")
    correct1 = correct5 = total = 0
    with eval_mode(model):
        for batch in dataloader:
            x, y = batch[0], batch[1]
            if x.ndim == 5:
                x = x[:, 0]
            x, y = x.to(device), y.to(device)
            out = model(x)
            logits = out.logits if isinstance(out, ModelOutput) else out
            if not torch.isfinite(logits).all():
                raise ValueError(
                    "the model's outputs hold NaN or inf: its weights are broken (a diverged run?); no "
                    "accuracy is given for them"
                )
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices == y[:, None]
            # top-1 by argmax, as training's validation (torchmetrics) counts it, also on exact ties
            correct1 += int((logits.argmax(dim=1) == y).sum())
            correct5 += int(hits.any(dim=1).sum())
            total += int(y.shape[0])
    if total == 0:
        raise ValueError("the dataloader yielded no samples")
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total}


# ---- checkpoints ----------------------------------------------------------------------------------------


def read_student_config(path: str | Path) -> dict[str, Any] | None:
    """A run's resolved ``config.yaml`` as a dict when it names a student architecture, else None."""
    cfg = read_run_config(path)
    student = cfg["model"].get("student") if cfg is not None else None
    return cfg if isinstance(student, dict) and model_name(student) else None


def find_run_config(checkpoint: str | Path) -> Path | None:
    """``<run>/config.yaml`` for ``<run>/student.pth`` or ``<run>/checkpoints/<name>.ckpt``."""
    checkpoint = Path(checkpoint).resolve()
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if read_student_config(folder / "config.yaml") is not None:
            return folder / "config.yaml"
    return None


def load_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of any accepted checkpoint layout (read with ``weights_only=True``)."""
    path = Path(checkpoint).expanduser()
    raw = read_checkpoint(path, weights_only=True)
    state = extract_state_dict(raw)
    if not state:
        raise CheckpointError(f"checkpoint {str(path)!r} has no student weights (no 'student.' keys)")
    return state


def build_model(
    num_classes: int, arch: str | None = None, run_config: Mapping[str, Any] | None = None
) -> tuple[nn.Module, str]:
    """The run config's ``model.student`` (with its options: a timm model's input normalization is no
    weight), else the architecture ``arch`` where it names another; returns it and its name."""
    student = ((run_config or {}).get("model") or {}).get("student")
    if arch is not None and (not student or model_name(student) != arch):
        return create_model(arch, num_classes=num_classes), arch
    if not student:
        raise ConfigError(
            "cannot tell the architecture: pass --arch NAME (the checkpoint has no run config.yaml "
            "next to it or one folder above)"
        )
    student = dict(student)
    if student.get("pretrained"):  # the checkpoint holds the weights: no download, the same input conversion
        student["normalize"] = student.get("normalize") or "pretrained_cfg"
        student["pretrained"] = False
    model = instantiate(model_config(OmegaConf.create(student)), num_classes=num_classes)
    return model, str(model_name(student))


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, source: str) -> nn.Module:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(
            f"{source}: tensors of other shapes than {arch!r} "
            f"({str(err).strip().splitlines()[-1].strip()}); check --arch and the data set's classes"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not match architecture {arch!r}: missing keys {result.missing_keys[:6]}, "
            f"unexpected keys {result.unexpected_keys[:6]}; pass the architecture it was trained with (--arch)"
        )
    return model


# ---- data -----------------------------------------------------------------------------------------------


def data_choices() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


def composed_data_config(data: str) -> DictConfig:
    """``conf/data/<data>.yaml`` as Hydra composes it: with the base it extends (``defaults``), unresolved."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(overrides=[f"+data={data}"]).data


def data_section(
    data: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    data_root: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``data`` config to instantiate: ``conf/data/<data>.yaml``, else the run config's ``data``."""
    if data is not None:
        path = CONFIG_DIR / "data" / f"{data}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown data {data!r}; choices: {', '.join(data_choices())} (in {CONFIG_DIR})"
            )
        context = OmegaConf.create(
            {
                "paths": {"data_dir": data_root or "data"},
                # what the data config reads from the method: evaluation's one plain view
                "distill": {"views": 1, "view_recipe": "rotation"},
                "seed": seed,
                "data": composed_data_config(data),
            }
        )
        section: dict[str, Any] = OmegaConf.to_container(context.data, resolve=True)  # type: ignore[assignment]
        trained = (run_config or {}).get("data")
        if isinstance(trained, Mapping):
            _warn_unlike(section, trained)
    elif run_config is not None and isinstance(run_config.get("data"), Mapping):
        section = dict(run_config["data"])
    else:
        raise ConfigError(
            f"cannot tell the data: pass --data ({'|'.join(data_choices())}); the checkpoint has no run "
            "config.yaml next to it or one folder above"
        )
    if data_root is not None and "root" in section:
        section["root"] = data_root
    if "views" in section:  # evaluation uses one un-augmented view whatever the training used
        section["views"] = 1
        section["view_recipe"] = "rotation"  # MLKD's weak_strong needs 2 views
    return section


#: data settings that change which images, classes or pixels a model sees: scored otherwise than trained
SHAPING = ("_target_", "image_size", "classes", "class_subset", "val_per_class", "val_fraction", "split_seed")


def _warn_unlike(section: Mapping[str, Any], trained: Mapping[str, Any]) -> None:
    """Warn where ``--data`` scores the model on other images, classes or sizes than its run trained with."""
    unlike = {k: (trained.get(k), section.get(k)) for k in SHAPING if trained.get(k) != section.get(k)}
    if unlike:
        listed = ", ".join(f"{k}: {old!r} in training -> {new!r} here" for k, (old, new) in unlike.items())
        log.warning(
            "--data differs from the data the run trained with (%s); leave --data out to score "
            "it on its own data",
            listed,
        )


def build_datamodule(
    section: Mapping[str, Any], batch_size: int | None = None, num_workers: int | None = None
):
    overrides: dict[str, Any] = {}
    if batch_size is not None:
        overrides["val_batch_size"] = batch_size
    if num_workers is not None:
        overrides["num_workers"] = num_workers
    return instantiate(OmegaConf.create(dict(section)), **overrides)


# ---- the command ---------------------------------------------------------------------------------------


@dataclass
class Loaded:
    model: nn.Module
    arch: str
    datamodule: Any
    run_config: Path | None


def checkpoint_file(checkpoint: str | Path) -> Path:
    """The file to evaluate: ``checkpoint`` itself, or a run folder's ``student.pth``; refused when absent."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if (path / "student.pth").is_file():
            return path / "student.pth"
        raise CheckpointError(
            f"the folder {str(path)!r} holds no student.pth (a run writes it when it finishes); pass a "
            "checkpoint file, e.g. <run>/checkpoints/last.ckpt"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path")
    return path


def load_for_eval(
    checkpoint: str | Path,
    arch: str | None = None,
    data: str | None = None,
    data_root: str | None = None,
    config: str | Path | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> Loaded:
    """Model (weights loaded, eval mode) and data module for ``checkpoint``, as ``pckd-eval`` builds them.

    ``checkpoint`` may be a run folder: its ``student.pth`` is evaluated.
    """
    checkpoint = checkpoint_file(checkpoint)
    config_path = Path(config) if config is not None else find_run_config(checkpoint)
    run_config = read_student_config(config_path) if config_path is not None else None
    if config is not None and run_config is None:
        raise ConfigError(f"--config {config}: not a run config.yaml with model.student.name")
    if arch is None and run_config is None:
        broken = [
            folder / "config.yaml"
            for folder in (checkpoint.resolve().parent, checkpoint.resolve().parent.parent)
            if (folder / "config.yaml").is_file()
        ]
        if broken:
            raise ConfigError(
                f"{broken[0]} is not a readable run config (corrupt YAML, or no model.student.name), so the "
                "architecture is unknown: repair it (the run's .hydra/config.yaml holds a copy), or pass --arch "
                "NAME and --data NAME"
            )
        raise ConfigError(
            f"cannot tell the architecture of {str(checkpoint)!r}: pass --arch NAME (and --data NAME); "
            "there is no run config.yaml next to the checkpoint or one folder above"
        )
    if seed is None:
        seed = int((run_config or {}).get("seed") or 0)
    section = data_section(data, run_config, data_root, seed)
    datamodule = build_datamodule(section, batch_size, num_workers)
    model, arch = build_model(datamodule.num_classes, arch, run_config)
    load_weights(model, load_state_dict(checkpoint), arch, f"checkpoint {str(checkpoint)!r}")
    model.eval()
    datamodule.setup("validate")  # the data's normalization is known from here (the digits' own statistics)
    model.adapt_to_data(datamodule.mean, datamodule.std)  # a timm model's conversion, as in training
    return Loaded(model, arch, datamodule, config_path if run_config is not None else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pckd-eval",
        description="Top-1/top-5 of a checkpoint on the validation split; optionally export the model.",
    )
    p.add_argument("--checkpoint", required=True, help="student.pth, a Lightning .ckpt or {'model': sd}")
    p.add_argument("--arch", help="architecture (default: model.student.name of the run's config.yaml)")
    p.add_argument("--data", help="conf/data/<DATA>.yaml, e.g. digits, cifar100 (default: the run's data)")
    p.add_argument("--data-root", help="sets data.root (the folder with cifar-100-python for cifar100)")
    p.add_argument("--config", help="the run's config.yaml (default: found next to the checkpoint)")
    p.add_argument(
        "--seed", type=int, help="the run's seed (the held-out images are fixed by data.split_seed)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="validation batch size (default 256)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--export", choices=EXPORT_FORMATS, help="also write the model in this format")
    p.add_argument("--out", help="where --export writes (required with --export)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation (with --export)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.export and not args.out:
        parser().error("--export needs --out PATH")
    if args.no_eval and not args.export:
        parser().error("--no-eval without --export does nothing")
    try:
        device = None if args.no_eval else resolve_device(args.device)
        loaded = load_for_eval(
            args.checkpoint,
            arch=args.arch,
            data=args.data,
            data_root=args.data_root,
            config=args.config,
            seed=args.seed,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
    except (CheckpointError, ConfigError, ValueError) as err:
        print(f"pckd-eval: error: {err}", file=sys.stderr)
        return 2
    dm = loaded.datamodule
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "arch": loaded.arch}
    if loaded.run_config is not None:
        result["config"] = str(loaded.run_config)
    if not args.no_eval:
        loaded.model.to(device)
        # the split results are reported on: a holdout run's validation images are training images
        loader = dm.test_dataloader()
        try:
            result.update(evaluate(loaded.model, loader, device))
        except ValueError as err:
            print(f"pckd-eval: error: {err}", file=sys.stderr)
            return 2
        result["num_images"] = len(loader.dataset)
        loaded.model.cpu()
    if args.export:
        example = torch.randn(1, dm.in_channels, dm.image_size, dm.image_size)
        result["exported"] = str(export_model(loaded.model, args.export, args.out, example))
        result["export_format"] = args.export
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"checkpoint: {result['checkpoint']}")
    print(f"arch:       {loaded.arch}" + (f"  (from {loaded.run_config})" if loaded.run_config else ""))
    if "top1" in result:
        print(f"data:       {type(dm).__name__}, evaluation split, {result['num_images']} images")
        print(f"top-1:      {result['top1']:.2f}%")
        print(f"top-5:      {result['top5']:.2f}%")
    if "exported" in result:
        print(f"exported:   {result['exported']} ({args.export})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

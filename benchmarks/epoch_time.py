"""Wall time of PCKD training epochs through the real app: DataLoader path vs the device-resident path.

Writes a fake CIFAR-100 folder of the real shapes (random pixels: speed does not depend on content) unless
``--root`` points at real data, then times ``--steps`` training steps of each data path with a callback
and prints one JSON line per path, with the epoch time extrapolated to the 782 steps of a CIFAR-100 epoch,
and what one step issues (kernels on CUDA, dispatched operations on CPU; see ``op_count.py``), counted on
the three steps before the timed ones.

    python benchmarks/epoch_time.py --steps 200 --workers 8

The host's cost per step can be seen on a CPU too: narrow models of the same depth on two images make the
arithmetic small, so what remains is Python, Lightning and dispatch (``--pair`` sets the pair):

    python benchmarks/epoch_time.py --paths cifar100_gpu --pair resnet32:resnet8 --batch-size 2 \
        --override trainer.precision=32-true --override module.performance.channels_last=false
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from op_count import count_ops

from pckd_lightning.models import create_model
from pckd_lightning.run import fit
from pckd_lightning.run.origin import code_version

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def write_fake_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50_000), ("test", 10_000)):
        labels = np.arange(n) % 100
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump(
                {"data": data, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f
            )
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)


class StepTimer(L.Callback):
    """Wall time of the training steps after ``warmup`` (device synchronized at both ends), saved as JSON,
    with the operations of the ``COUNTED`` steps before them."""

    COUNTED = 3

    def __init__(self, warmup: int, result: str) -> None:
        self.warmup, self.result, self.start, self.end, self.steps = warmup, Path(result), None, None, 0
        self.counts: list = []
        self._counting = None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.warmup - self.COUNTED <= batch_idx < self.warmup:
            # older versions of the module (timed for before/after comparisons) hold the flags themselves
            options = getattr(pl_module, "performance", pl_module)
            compiled = getattr(options, "compile", False) or getattr(pl_module, "compile_models", False)
            compiled = compiled or getattr(options, "compile_losses", False)
            self._counting = count_ops(pl_module.device, compiled=compiled)
            self.counts.append(self._counting.__enter__())
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counting is not None:
            self._counting.__exit__(None, None, None)
            self._counting = None
        if self.start is not None:
            self.steps += 1
            if batch_idx == trainer.num_training_batches - 1:  # the last step, before the epoch's validation
                self._sync()
                self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning validates before this hook: the end was taken after the last training step
        seconds = self.end - self.start
        totals = [c.total for c in self.counts]
        ops = None if not totals or None in totals else round(sum(totals) / len(totals), 1)
        method = self.counts[0].method if self.counts else None
        self.result.write_text(
            json.dumps({"steps": self.steps, "seconds": seconds, "ops_per_step": ops, "ops_method": method})
        )


def time_path(
    data: str, root: Path, teacher: Path, args: argparse.Namespace, extra: list[str], out: Path
) -> dict:
    """Time ``args.steps`` PCKD steps of ``args.pair`` (batch ``args.batch_size`` x 4 views) on one data path."""
    teacher_name, student_name = args.pair.split(":")
    overrides = [
        "experiment=cifar100_pckd_resnet32x4_resnet8x4",
        f"data={data}",
        f"data.root={root}",
        f"data.batch_size={args.batch_size}",
        f"model.teacher.name={teacher_name}",
        f"model.teacher.checkpoint={teacher}",
        f"model.student.name={student_name}",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={args.steps + args.warmup}",
        "+trainer.limit_val_batches=1",
        "logger=none",
        "callbacks=none",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = out / f"{data}.json"
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / data)
        cfg.callbacks = {
            "timer": {"_target_": "epoch_time.StepTimer", "warmup": args.warmup, "result": str(result)}
        }
    summary = fit(cfg)
    timing = json.loads(result.read_text())
    per_step = timing["seconds"] / timing["steps"]
    return {
        "data_path": data,
        "device": cfg.trainer.accelerator,
        "pair": args.pair,
        "batch_images": args.batch_size,
        "overrides": extra,
        "timed_steps": timing["steps"],
        "seconds": round(timing["seconds"], 3),
        "ms_per_step": round(1e3 * per_step, 2),
        "images_per_s": round(args.batch_size / per_step, 1),
        "epoch_s_extrapolated": round(per_step * math.ceil(50_000 / args.batch_size), 2),
        "ops_per_step": timing["ops_per_step"],
        "ops_method": timing["ops_method"],
        "code": code_version(),
        "machine": summary["machine"],
        "options": vars(args),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="real data (default: fake data of the real shapes)"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help=f"untimed steps (>= {StepTimer.COUNTED})")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--paths", nargs="+", default=["cifar100_gpu", "cifar100"])
    parser.add_argument("--pair", default="resnet32x4:resnet8x4", help="teacher:student")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (x 4 views)")
    parser.add_argument(
        "--override",
        action="append",
        default=["trainer.precision=bf16-mixed", "module.performance.channels_last=true"],
        help="a Hydra override, after the defaults (bf16-mixed, channels_last); repeat for more",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    root = args.root or work / "data"
    if args.root is None:
        write_fake_cifar100(root)
    teacher = work / "teacher.pth"
    torch.save({"model": create_model(args.pair.split(":")[0], num_classes=100).state_dict()}, teacher)
    for data in args.paths:
        extra = [*args.override, f"data.num_workers={0 if data.endswith('_gpu') else args.workers}"]
        result = time_path(data, root, teacher, args, extra, work)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Wall time of PCKD training epochs through the real app: DataLoader path vs the device-resident path.

Writes a fake CIFAR-100 folder of the real shapes (random pixels: speed does not depend on content) unless
``--root`` points at real data, then times ``--steps`` training steps of each data path with a callback
and prints one JSON line per path, with the epoch time extrapolated to the 782 steps of a CIFAR-100 epoch.

    python benchmarks/epoch_time.py --steps 200 --workers 8
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pckd_lightning.models import create_model
from pckd_lightning.runner import fit

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
STEPS_PER_EPOCH = 782  # 50,000 images, batch 64


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
    """Wall time of the training steps after ``warmup`` (device synchronized at both ends), saved as JSON."""

    def __init__(self, warmup: int, result: str) -> None:
        self.warmup, self.result, self.start, self.steps = warmup, Path(result), None, 0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self.steps += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync()
        seconds = time.perf_counter() - self.start
        self.result.write_text(json.dumps({"steps": self.steps, "seconds": seconds}))


def time_path(
    data: str, root: Path, teacher: Path, steps: int, warmup: int, extra: list[str], out: Path
) -> dict:
    """Time ``steps`` PCKD steps (resnet32x4 -> resnet8x4, batch 64 x 4 views) on one data path."""
    overrides = [
        "experiment=cifar100/pckd/resnet32x4_resnet8x4",
        f"data={data}",
        f"data.root={root}",
        f"model.teacher.checkpoint={teacher}",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={steps + warmup}",
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
            "timer": {"_target_": "epoch_time.StepTimer", "warmup": warmup, "result": str(result)}
        }
    fit(cfg)
    timing = json.loads(result.read_text())
    per_step = timing["seconds"] / timing["steps"]
    return {
        "data_path": data,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "overrides": extra,
        "timed_steps": timing["steps"],
        "seconds": round(timing["seconds"], 3),
        "images_per_s": round(64 / per_step, 1),
        "epoch_s_extrapolated": round(per_step * STEPS_PER_EPOCH, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="real data (default: fake data of the real shapes)"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--paths", nargs="+", default=["cifar100_gpu", "cifar100"])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    root = args.root or work / "data"
    if args.root is None:
        write_fake_cifar100(root)
    teacher = work / "resnet32x4.pth"
    torch.save({"model": create_model("resnet32x4", num_classes=100).state_dict()}, teacher)
    speed = ["trainer.precision=bf16-mixed", "performance.channels_last=true"]
    for data in args.paths:
        extra = [*speed, f"data.num_workers={0 if data.endswith('_gpu') else args.workers}"]
        result = time_path(data, root, teacher, args.steps, args.warmup, extra, work)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

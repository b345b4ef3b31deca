#!/usr/bin/env python
"""Images/s of the CIFAR-100 training loader: the ordinary DataLoader per worker count, and the GPU-resident path.

The ordinary path is :class:`CIFAR100DataModule` (PIL + torchvision transforms in DataLoader workers; with
``--views 4`` PCKD's :class:`MultiViewRotation`). With ``--device cuda`` its batches are also copied to the
GPU (pinned memory, non-blocking), since a training step needs them there. The GPU-resident path is
:class:`GPUResidentCIFAR100DataModule` on ``--device`` (the uint8 train set on the device, batches augmented
there). Each path is timed over ``--batches`` batches after ``--warmup-batches`` untimed ones (the first
batch, including worker start-up, is reported separately as ``first_batch_s``).

Usage::

    python benchmarks/loader_throughput.py --root ../shared/data --workers 0 1 2 --batches 50
    python benchmarks/loader_throughput.py --root .device_data --workers 0 4 8 --device cuda --batches 100

One JSON line per configuration is printed (``"bench": "loader"``), after a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # a plain checkout without `pip install -e .`
    sys.path.append(str(REPO / "src"))

from pckd_lightning.data import CIFAR100DataModule, GPUResidentCIFAR100DataModule  # noqa: E402
from pckd_lightning.run.origin import code_version, machine_of  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forever(loader: Iterable) -> Iterator:
    """Batches across epochs (a new epoch starts when one ends)."""
    while True:
        yield from loader


def queued_batches(loader: Iterable) -> int:
    """How many batches a DataLoader's workers hold ready ahead of the consumer (0 for other loaders)."""
    if not isinstance(loader, DataLoader) or loader.num_workers == 0:
        return 0
    return loader.num_workers * (loader.prefetch_factor or 2)


def time_loader(loader: Iterable, device: torch.device, batches: int, warmup: int) -> dict[str, float]:
    """``first_batch_s`` (start-up included), then images/s over ``batches`` batches after ``warmup`` (at
    least the workers' queue and one more: batches made while the workers started would count as free)."""
    warmup = max(warmup, queued_batches(loader) + 1)
    move = device.type == "cuda"
    start = time.perf_counter()
    stream = _forever(loader)
    x, _, _ = next(stream)
    if move:
        x = x.to(device, non_blocking=True)
    _sync(device)
    first = time.perf_counter() - start
    for x, _, _ in itertools.islice(stream, max(warmup - 1, 0)):
        if move:
            x = x.to(device, non_blocking=True)
    _sync(device)
    images = 0
    start = time.perf_counter()
    for x, y, _ in itertools.islice(stream, batches):
        if move:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        images += len(y)
    _sync(device)
    seconds = time.perf_counter() - start
    del stream  # shuts the loader's iterator (and its workers) down
    return {
        "first_batch_s": first,
        "img_s": images / seconds,
        "seconds": seconds,
        "images": images,
        "warmup_batches": warmup,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    common = {
        "batch_size": args.batch_size,
        "views": args.views,
        "train_per_class": args.train_per_class,
        "seed": args.seed,
        "check_sizes": not args.partial,
    }
    base = {
        "bench": "loader",
        "batch_size": args.batch_size,
        "views": args.views,
        "device": device.type,
        "batches": args.batches,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "code": code_version(),
        "machine": machine_of(device),
        "options": vars(args),
    }
    results = []
    ordinary = CIFAR100DataModule(args.root, pin_memory=device.type == "cuda", **common)
    start = time.perf_counter()
    ordinary.setup("fit")
    load_s = time.perf_counter() - start
    for workers in args.workers:
        ordinary.num_workers = workers
        timing = time_loader(ordinary.train_dataloader(), device, args.batches, args.warmup_batches)
        results.append({**base, "path": "dataloader", "workers": workers, "load_s": load_s, **timing})
        print(f"dataloader workers={workers}: {timing['img_s']:.0f} img/s", file=sys.stderr, flush=True)
    if not args.skip_resident:
        resident = GPUResidentCIFAR100DataModule(
            args.root, device=device, channels_last=args.channels_last, **common
        )
        start = time.perf_counter()
        loader = resident.train_dataloader()
        _sync(device)
        upload_s = time.perf_counter() - start
        timing = time_loader(loader, device, args.batches, args.warmup_batches)
        extra = {"channels_last": args.channels_last, "load_s": upload_s}
        results.append({**base, "path": "gpu_resident", "workers": 0, **extra, **timing})
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    rows = [f"{'path':<14}{'workers':>8}{'device':>8}{'img/s':>11}{'first batch s':>15}"]
    for r in results:
        rows.append(
            f"{r['path']:<14}{r['workers']:>8}{r['device']:>8}{r['img_s']:>11.0f}{r['first_batch_s']:>15.2f}"
        )
    first = results[0]
    rows.append(
        f"{first['batch_size']} images x {first['views']} views per batch, {first['batches']} timed batches; "
        f"{first['cpu_count']} CPUs"
    )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--root", default=str(REPO.parent / "shared" / "data"), help="folder with cifar-100-python"
    )
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    p.add_argument("--batches", type=int, default=30, help="timed batches per configuration")
    p.add_argument("--warmup-batches", type=int, default=2, help="untimed batches first (start-up included)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--views", type=int, default=4, help="4: PCKD's rotated views; 1: the single-view pipeline"
    )
    p.add_argument("--train-per-class", type=int, default=None, help="subsample the train set (per class)")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument("--channels-last", action="store_true", help="GPU-resident batches in channels_last order")
    p.add_argument("--skip-resident", action="store_true", help="time only the DataLoader path")
    p.add_argument("--threads", type=int, default=0, help="torch threads in this process (0: default)")
    p.add_argument(
        "--partial", action="store_true", help="accept a cut-down CIFAR copy (no split-size check)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1 or min(args.workers) < 0:
        p.error("--batches and --batch-size must be >= 1 and worker counts >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    results = run(parse_args(argv))
    print(format_table(results))
    for r in results:
        print(json.dumps(r), flush=True)
    return results


if __name__ == "__main__":
    main()

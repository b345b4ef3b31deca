"""What one GradientShare measurement costs next to the training step it measures (CPU or GPU).

Times a full step (forward, loss, backward, SGD) of the cpu profile's pair (resnet20 -> resnet8, CIFAR
shapes, random images) and one ``GradientShare.measure`` on the same batch, each as the median of
``--repeats`` runs after one untimed run.

    python benchmarks/gradient_share_cost.py --method pckd --batch-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from pckd_lightning.callbacks import GradientShare
from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.losses import (
    CategoryContrastTerm,
    CenterAlignTerm,
    CrossEntropyTerm,
    FeatureAlignTerm,
    KDTerm,
)
from pckd_lightning.models import create_model
from pckd_lightning.preview import PreviewWeights
from pckd_lightning.run.origin import code_version, cpu_name

CLASSES = 20


def terms(method: str) -> dict:
    if method == "kd":
        return {"ce": CrossEntropyTerm(weight=0.1), "kd": KDTerm(weight=0.9)}
    return {
        "ce": CrossEntropyTerm(),
        "kd": KDTerm(preview=True),
        "category_contrast": CategoryContrastTerm(weight=0.05, preview=True),
        "center_align": CenterAlignTerm(),
        "feature_align": FeatureAlignTerm(weight=20.0),
    }


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=("kd", "pckd"), default="pckd")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", CLASSES),
        teacher=create_model("resnet20", CLASSES),
        terms=terms(args.method),
        optimizer=partial(torch.optim.SGD, lr=0.01),
        num_classes=CLASSES,
        preview=PreviewWeights() if args.method == "pckd" else None,
        teacher_options=TeacherOptions(measure=False),
    )
    module.train()
    views = 4 if args.method == "pckd" else 1
    images = (
        torch.randn(args.batch_size, views, 3, 32, 32)
        if views > 1
        else torch.randn(args.batch_size, 3, 32, 32)
    )
    batch = images, torch.arange(args.batch_size) % CLASSES, torch.arange(args.batch_size)
    optimizer = module.configure_optimizers()["optimizer"]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.step(batch)[2].backward()
        optimizer.step()

    share = GradientShare(every_n_steps=1)
    step_s = median_seconds(step, args.repeats)
    measure_s = median_seconds(lambda: share.measure(module, batch), args.repeats)
    print(
        f"{args.method}, {len(module.terms)} terms, batch {args.batch_size}x{views} views, {args.threads} threads: "
        f"step {step_s * 1e3:.0f} ms, measurement {measure_s * 1e3:.0f} ms ({measure_s / step_s:.2f} steps); "
        f"{cpu_name()}, commit {code_version().get('commit')}"
    )


if __name__ == "__main__":
    main()

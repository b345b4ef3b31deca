#!/usr/bin/env python
"""Training-step throughput of a distillation method against the bare teacher + student step.

Two steps are timed in the same process, on the same synthetic CIFAR-shaped batches (num_classes 100):

* **bare**: the teacher's forward (no_grad) and the student's forward/backward with plain cross-entropy on
  the same views (all V views of every image), then an SGD step: the floor any distillation method pays;
* **full**: the method's step through a real :class:`DistillationModule` built from
  ``conf/distill/<method>.yaml``: its :class:`DistillStep` (context, losses with the method's preview weights,
  the weighted sum), backward and an SGD step.

Bare and full share the student and teacher modules (so a compiled graph serves both, and the memory they
hold is the same); each has its own SGD optimizer. The two are interleaved in rounds whose order alternates
(bare-full, full-bare, ...) after warm-up steps of each, so slow drift of the machine (clocks, other jobs)
cancels in the ratio. Images/s counts images (64 per step), not views.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each timed block; ``peak`` is the
absolute peak, ``step`` the peak minus what was allocated before the block). On CPU the kernel's peak RSS
(``VmHWM``, reset per block by writing 5 to ``/proc/self/clear_refs``) minus the RSS at the block's start:
coarse, since the allocator keeps freed memory. ``saved`` is device-independent: the bytes of the distinct
tensors autograd saves for backward in one step, parameters excluded (measured in eager mode).

On CPU, wall time on a shared machine includes other jobs' time: ``cpu_time_ratio`` (process CPU time) is
the steadier figure there, and the minor page faults per step are reported. With glibc's default settings a
CPU step's time depends on the order of its large allocations (freed activations are unmapped and faulted
in again): ``--both-orders`` also times the bare step in the module's order (student forward first),
``--malloc tuned`` turns the unmapping off, ``--breakdown`` times the full step without each term.

Usage::

    python benchmarks/step_throughput.py --pair resnet56:resnet20 --method kd --steps 5
    python benchmarks/step_throughput.py --pair resnet32x4:resnet8x4 --method pckd --device cuda \
        --precision bf16 --channels-last --compile --steps 30 --warmup 10

The last line printed is one JSON object (``ratio`` = full step time / bare step time).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
if str(REPO / "src") not in sys.path:  # a plain checkout without `pip install -e .`
    sys.path.append(str(REPO / "src"))
if str(REPO / "benchmarks") not in sys.path:  # its sibling op_count, also when loaded from a file path
    sys.path.append(str(REPO / "benchmarks"))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from op_count import count_ops  # noqa: E402

from pckd_lightning.distillation import DistillationModule, DistillStep, Performance, TeacherOptions  # noqa: E402
from pckd_lightning.distillation.teacher import cast_convolutions  # noqa: E402
from pckd_lightning.losses import LossTerm  # noqa: E402
from pckd_lightning.models import create_model  # noqa: E402
from pckd_lightning.preview import PreviewWeights  # noqa: E402
from pckd_lightning.run.build import build_terms  # noqa: E402
from pckd_lightning.run.origin import code_version, cpu_name  # noqa: E402

NUM_CLASSES = 100
IMAGE_SIZE = 32
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# the method's loss terms, from the project's config
# ---------------------------------------------------------------------------------------------------
def load_method(method: str) -> tuple[dict[str, LossTerm], int, PreviewWeights | None]:
    """``(terms, views, preview weights or None)`` of ``conf/distill/<method>``, composed by Hydra."""
    path = CONF / "distill" / f"{method}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF / "distill").glob("*.yaml"))
        raise SystemExit(f"unknown method {method!r}: no {path}; choose one of {choices}")
    if GlobalHydra.instance().is_initialized():
        raise SystemExit("load_method composes conf/ itself: call it outside an initialized Hydra context")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        distill = compose(config_name="train", overrides=[f"distill={method}"]).distill
    preview = None if distill.get("preview") is None else instantiate(distill.preview)
    return build_terms(distill), int(distill.views), preview


# ---------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory of a block of steps: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated"
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.method = "cpu peak RSS (VmHWM reset per block via /proc/self/clear_refs)"
                self._resettable = True
            except OSError:
                self.method = "cpu peak RSS (process lifetime: VmHWM not resettable)"
                self._resettable = False
        self._base = 0

    @contextlib.contextmanager
    def block(self, record: dict[str, float]) -> Iterator[None]:
        mib = 1024**2
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            record["peak_mb"] = max(record.get("peak_mb", 0.0), peak / mib)
            record["step_mb"] = max(record.get("step_mb", 0.0), (peak - base) / mib)
            return
        if self._resettable:
            Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status_kb("VmRSS") or 0
        yield
        peak = _proc_status_kb("VmHWM") or 0
        record["peak_mb"] = max(record.get("peak_mb", 0.0), peak / 1024)
        record["step_mb"] = max(record.get("step_mb", 0.0), (peak - base) / 1024)


def tune_malloc() -> bool:
    """glibc only: serve every allocation from the heap and never trim it, so that freed activations are
    reused instead of being unmapped and faulted in again (page faults otherwise cost ~10% of a CPU step and
    depend on the order of allocations). Returns whether it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return bool(
        libc.mallopt(m_mmap_max, 0)
        and libc.mallopt(m_trim_threshold, 2**31 - 1)
        and libc.mallopt(m_top_pad, 1 << 28)
    )


def malloc_env() -> str:
    """glibc tunables set in the environment (e.g. ``MALLOC_MMAP_MAX_=0``), as ``NAME=value,...``."""
    return ",".join(
        f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))
    )


def saved_tensor_mb(step: Callable[[], None], exclude: list[torch.Tensor]) -> float:
    """MiB of the distinct storages autograd saves for backward during ``step`` (``exclude``: parameters)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(RuntimeError):  # e.g. tensors without storage
            storage = t.untyped_storage()
            if storage.data_ptr() not in skip:
                seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 1024**2


# ---------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------
def synthetic_batches(
    count: int, batch: int, views: int, device: torch.device, channels_last: bool, seed: int
) -> list[Batch]:
    """CIFAR-shaped batches ``(x, y, idx)`` in the data modules' format, already on the device.

    With ``channels_last`` the views are laid out so that the flattened ``[B·V, C, H, W]`` batch the models
    see is in ``torch.channels_last`` order (as the GPU-resident data path produces it).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        shape = (batch, views, IMAGE_SIZE, IMAGE_SIZE, 3) if views > 1 else (batch, IMAGE_SIZE, IMAGE_SIZE, 3)
        x = torch.randn(shape, generator=g).to(device).movedim(-1, -3)
        if not channels_last:
            x = x.contiguous()
        y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
        idx = torch.arange(i * batch, (i + 1) * batch, device=device)
        out.append((x, y, idx))
    return out


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepBench:
    """The module, the shared models, both optimizers and both step functions."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.device = device
        teacher_name, _, student_name = args.pair.partition(":")
        if not student_name:
            raise SystemExit(f"--pair must be teacher:student, got {args.pair!r}")
        torch.manual_seed(args.seed)
        terms, self.views, preview = load_method(args.method)
        self.method = args.method
        student = create_model(student_name, num_classes=NUM_CLASSES)
        teacher = create_model(teacher_name, num_classes=NUM_CLASSES)
        self.module = DistillationModule(
            student=student,
            teacher=teacher,
            terms=terms,
            optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
            preview=preview,
            num_classes=NUM_CLASSES,
            # as the app's module.performance.compile (student, teacher) and module.performance.compile_losses (terms) do,
            # in setup() below: the saved-tensor measurement runs eagerly before it
            performance=Performance(
                compile=args.compile, compile_losses=args.compile_losses, compile_mode=args.compile_mode
            ),
            teacher_options=TeacherOptions(measure=False),
        )
        self.step: DistillStep = self.module.step
        self.module.to(device).train()
        if args.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.student, self.teacher = self.module.student, self.module.teacher
        if args.precision == "bf16":  # as the app's module does under bf16-mixed; the bare step shares it
            cast_convolutions(self.teacher, torch.bfloat16)
        self.opt_full = self.module.optimizer_factory(self.module.trainable_parameters())
        self.opt_bare = torch.optim.SGD(self.student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.precision = args.precision
        self.bare_student_first = args.bare_order == "student-first"
        self.batches = synthetic_batches(
            args.batch_pool, args.batch_size, self.views, device, args.channels_last, args.seed
        )
        self._cursor = 0
        self.saved_mb = {
            "bare": saved_tensor_mb(lambda: self.bare_step(self.batches[0]), list(self.module.parameters())),
            "full": saved_tensor_mb(lambda: self.full_step(self.batches[0]), list(self.module.parameters())),
        }
        self.module.setup("fit")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def bare_step(self, batch: Batch, student_first: bool | None = None) -> None:
        """Teacher forward (no_grad), student forward + CE on all views, backward, SGD step.

        ``student_first`` runs the student before the teacher, the order of ``DistillStep.context``
        (default: ``--bare-order``).
        """
        student_first = self.bare_student_first if student_first is None else student_first
        x, y, _ = batch
        if x.ndim == 5:
            y = y.repeat_interleave(x.shape[1])
            x = x.flatten(0, 1)
        with self.autocast():
            if not student_first:
                with torch.no_grad():
                    self.teacher(x, with_features=True)
            logits = self.student(x, with_features=True).logits
            if student_first:
                with torch.no_grad():
                    self.teacher(x, with_features=True)
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        self.opt_bare.step()
        self.opt_bare.zero_grad(set_to_none=True)

    def full_loss(self, batch: Batch) -> torch.Tensor:
        """``training_step``'s loss (its step, without its metric and logging calls)."""
        with self.autocast():
            return self.step(batch)[2]

    def full_step(self, batch: Batch) -> None:
        # the context (teacher outputs included) is released before backward, as after training_step
        total = self.full_loss(batch)
        total.backward()
        self.opt_full.step()
        self.opt_full.zero_grad(set_to_none=True)

    def run(self, step: Callable[[Batch], None], n: int) -> tuple[float, float, int]:
        """Wall-clock seconds, process CPU seconds and minor page faults of ``n`` steps.

        Synchronized with the device at both ends, not in between.
        """
        _sync(self.device)
        faults = _minor_faults()
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(n):
            step(self.batches[self._cursor % len(self.batches)])
            self._cursor += 1
        _sync(self.device)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        return wall, cpu, _minor_faults() - faults


@contextlib.contextmanager
def without_term(module: DistillationModule, name: str) -> Iterator[None]:
    """Temporarily drop one loss term from the module, whose terms its step reads (or, for ``"preview"``, the
    step's preview weights)."""
    step = module.step
    terms, preview = module.terms, step.preview
    if name == "preview":
        step.preview = None
    else:
        module.terms = torch.nn.ModuleDict({k: v for k, v in terms.items() if k != name})
    try:
        yield
    finally:
        module.terms, step.preview = terms, preview


def step_variants(args: argparse.Namespace, bench: StepBench) -> dict[str, Callable[[Batch], None]]:
    """The steps to time: bare and full, plus the other bare order and the full step without each term."""
    variants: dict[str, Callable[[Batch], None]] = {"bare": bench.bare_step, "full": bench.full_step}
    if args.breakdown or args.both_orders:
        other = "teacher-first" if bench.bare_student_first else "student-first"
        variants[f"bare-{other}"] = lambda batch: bench.bare_step(batch, not bench.bare_student_first)
    if args.breakdown:
        removable = [*bench.step.terms, *(["preview"] if bench.step.preview is not None else [])]
        for name in removable:

            def step(batch: Batch, name: str = name) -> None:
                with without_term(bench.module, name):
                    bench.full_step(batch)

            variants[f"full-{name}"] = step
    return variants


@dataclass
class Timings:
    """Per variant: wall and process-CPU seconds of each round, minor page faults, peak memory."""

    seconds: dict[str, list[float]]
    cpu_seconds: dict[str, list[float]]
    faults: dict[str, int]
    memory: dict[str, dict[str, float]]
    steps: int
    rounds: int

    def ms(self) -> dict[str, float]:
        return {name: 1e3 * sum(s) / self.steps for name, s in self.seconds.items()}

    def cpu_ms(self) -> dict[str, float]:
        return {name: 1e3 * sum(c) / self.steps for name, c in self.cpu_seconds.items()}


def time_rounds(
    args: argparse.Namespace,
    bench: StepBench,
    variants: dict[str, Callable[[Batch], None]],
    meter: MemoryMeter,
) -> Timings:
    """The timed steps, in interleaved rounds whose order alternates, so that drift cancels in the ratios."""
    per_round = math.ceil(args.steps / max(1, min(args.rounds, args.steps)))
    rounds = math.ceil(args.steps / per_round)
    timings = Timings(
        seconds={name: [] for name in variants},
        cpu_seconds={name: [] for name in variants},
        faults=dict.fromkeys(variants, 0),
        memory={name: {} for name in variants},
        steps=rounds * per_round,
        rounds=rounds,
    )
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            with meter.block(timings.memory[name]):
                wall, cpu, minflt = bench.run(variants[name], per_round)
            timings.seconds[name].append(wall)
            timings.faults[name] += minflt
            timings.cpu_seconds[name].append(cpu)
    return timings


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench, warm up, count one step's ops, time the rounds and return the result's fields."""
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = args.malloc == "tuned" and tune_malloc()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    bench = StepBench(args, device)
    meter = MemoryMeter(device)
    variants = step_variants(args, bench)
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        for step in variants.values():
            bench.run(step, 1)
    warmup_s = time.perf_counter() - compile_start
    ops = {}
    for name in ("bare", "full"):
        with count_ops(device, compiled=args.compile or args.compile_losses) as ops[name]:
            bench.run(variants[name], 1)
    timings = time_rounds(args, bench, variants, meter)
    result = {
        **run_description(args, bench, device, malloc_tuned, warmup_s, timings),
        # what one step issues (kernels on CUDA, dispatched ops on CPU): the host's per-step work
        "bare_ops": ops["bare"].total,
        "full_ops": ops["full"].total,
        "ops_method": ops["full"].method,
        **step_figures(args, bench, timings),
        "mem_method": meter.method,
    }
    if len(variants) > 2:
        result["variant_ms"] = timings.ms()
        result["variant_cpu_ms"] = timings.cpu_ms()
        result["variant_minflt_per_step"] = {name: f / timings.steps for name, f in timings.faults.items()}
    if args.breakdown:
        ms, cpu_ms = timings.ms(), timings.cpu_ms()
        removed = [name for name in variants if name.startswith("full-")]
        result["term_ms"] = {name.removeprefix("full-"): ms["full"] - ms[name] for name in removed}
        result["term_cpu_ms"] = {
            name.removeprefix("full-"): cpu_ms["full"] - cpu_ms[name] for name in removed
        }
    return result


def run_description(
    args: argparse.Namespace,
    bench: StepBench,
    device: torch.device,
    malloc_tuned: bool,
    warmup_s: float,
    timings: Timings,
) -> dict[str, Any]:
    """What was measured, where and how: pair, method, device, options, the machine's state."""
    return {
        "pair": args.pair,
        "method": args.method,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "compile_losses": args.compile_losses,
        "compile_mode": args.compile_mode,
        "batch_images": args.batch_size,
        "views": bench.views,
        "steps": timings.steps,
        "rounds": timings.rounds,
        "warmup": args.warmup,
        "warmup_s": round(warmup_s, 2),
        "threads": torch.get_num_threads(),
        "bare_order": args.bare_order,
        "malloc": "tuned" if malloc_tuned else malloc_env() or "default",
        "terms": {name: term.weight for name, term in bench.step.terms.items()},
        "skipped_terms": sorted(bench.module.skipped_terms),
        "preview": bench.step.preview is not None,
        "torch": torch.__version__,
        "cudnn_benchmark": bool(device.type == "cuda" and torch.backends.cudnn.benchmark),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "code": code_version(),
        "options": vars(args),
    }


def step_figures(args: argparse.Namespace, bench: StepBench, timings: Timings) -> dict[str, Any]:
    """Throughput, time, CPU time, page faults and memory of the bare and the full step, and their ratios."""
    seconds, cpu_seconds, memory, steps = timings.seconds, timings.cpu_seconds, timings.memory, timings.steps
    images = args.batch_size * steps
    ms = timings.ms()
    round_ratios = [f / b for f, b in zip(seconds["full"], seconds["bare"], strict=True)]
    return {
        "bare_img_s": images / sum(seconds["bare"]),
        "full_img_s": images / sum(seconds["full"]),
        "bare_ms": ms["bare"],
        "full_ms": ms["full"],
        "ratio": sum(seconds["full"]) / sum(seconds["bare"]),
        "ratio_median_round": statistics.median(round_ratios),
        # process CPU time (all threads): on a shared CPU it is not inflated by other jobs as wall time is
        "bare_cpu_ms": 1e3 * sum(cpu_seconds["bare"]) / steps,
        "full_cpu_ms": 1e3 * sum(cpu_seconds["full"]) / steps,
        "cpu_time_ratio": sum(cpu_seconds["full"]) / max(sum(cpu_seconds["bare"]), 1e-9),
        # freed CPU memory that the allocator unmapped and the next step faults in again (see tune_malloc)
        "bare_minflt_per_step": timings.faults["bare"] / steps,
        "full_minflt_per_step": timings.faults["full"] / steps,
        "bare_peak_mb": memory["bare"].get("peak_mb"),
        "full_peak_mb": memory["full"].get("peak_mb"),
        "bare_step_mb": memory["bare"].get("step_mb"),
        "full_step_mb": memory["full"].get("step_mb"),
        "bare_saved_mb": bench.saved_mb["bare"],
        "full_saved_mb": bench.saved_mb["full"],
    }


def format_table(result: dict[str, Any]) -> str:
    def fmt(value: float | None, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    head = (
        f"{result['method']} {result['pair']} on {result['device']} ({result['device_name'] or '?'}), "
        f"{result['precision']}{' channels_last' if result['channels_last'] else ''}"
        f"{' compiled' if result['compile'] else ''}{' compiled-losses' if result['compile_losses'] else ''}; "
        f"{result['batch_images']} images x {result['views']} views, "
        f"{result['steps']} timed steps in {result['rounds']} interleaved rounds, threads {result['threads']}"
    )
    rows = [f"{'step':<6}{'img/s':>10}{'ms/step':>10}{'peak MiB':>10}{'step MiB':>10}{'saved MiB':>11}"]
    for name in ("bare", "full"):
        rows.append(
            f"{name:<6}{fmt(result[f'{name}_img_s']):>10}{fmt(result[f'{name}_ms']):>10}"
            f"{fmt(result[f'{name}_peak_mb']):>10}{fmt(result[f'{name}_step_mb']):>10}"
            f"{fmt(result[f'{name}_saved_mb']):>11}"
        )
    rows.append(
        f"ratio full/bare (time): {result['ratio']:.3f}  "
        f"(median of rounds {result['ratio_median_round']:.3f}); "
        f"process CPU time ratio {result['cpu_time_ratio']:.3f}"
    )
    if result["full_ops"] is not None:
        rows.append(
            f"per step: bare {result['bare_ops']}, full {result['full_ops']} ({result['ops_method']})"
        )
    if result["device"] == "cpu":
        rows.append(
            f"minor page faults per step: bare {result['bare_minflt_per_step']:.0f}, "
            f"full {result['full_minflt_per_step']:.0f} (malloc {result['malloc']})"
        )
    if "term_ms" in result:
        for key, what in (("term_ms", "wall"), ("term_cpu_ms", "process CPU")):
            parts = ", ".join(
                f"{k} {v:+.1f} ms" for k, v in sorted(result[key].items(), key=lambda kv: -kv[1])
            )
            rows.append(f"cost of each term (full minus full-without-it), {what} time: {parts}")
    if "variant_ms" in result:
        rows.append("every variant: wall ms / CPU ms / minor faults per step:")
        for k, v in result["variant_ms"].items():
            cpu, faults = result["variant_cpu_ms"][k], result["variant_minflt_per_step"][k]
            rows.append(f"  {k:<28}{v:>10.1f}{cpu:>10.1f}{faults:>10.0f}")
    rows.append(f"memory: {result['mem_method']}; saved = autograd-saved activations (eager)")
    return "\n".join([head, *rows])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--pair", default="resnet32x4:resnet8x4", help="teacher:student, e.g. resnet56:resnet20")
    p.add_argument("--method", default="pckd", help="a file of conf/distill/ (pckd, kd, ...)")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast to bfloat16"
    )
    p.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the student and the teacher")
    p.add_argument("--compile-losses", action="store_true", help="torch.compile the loss terms")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile's mode for --compile and --compile-losses (e.g. reduce-overhead: CUDA graphs)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps of each of bare and full")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each before timing")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds the timed steps are split into")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="images per step (x views for multi-view methods)"
    )
    p.add_argument("--batch-pool", type=int, default=4, help="distinct synthetic batches cycled through")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument(
        "--bare-order",
        default="teacher-first",
        choices=["teacher-first", "student-first"],
        help="forward order of the bare step (student-first is DistillationModule.context's order)",
    )
    p.add_argument(
        "--malloc",
        default="default",
        choices=["default", "tuned"],
        help="tuned: glibc mallopt so that freed CPU memory is reused, not unmapped (see tune_malloc)",
    )
    p.add_argument(
        "--both-orders", action="store_true", help="also time the bare step in the other forward order"
    )
    p.add_argument("--breakdown", action="store_true", help="also time the full step without each term")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.batch_pool < 1:
        p.error("--steps, --batch-size and --batch-pool must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    result = measure(parse_args(argv))
    print(format_table(result))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

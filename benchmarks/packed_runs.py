"""Several training runs side by side on one GPU: the throughput it buys, and a paper row packed that way.

Small CIFAR runs leave most of a large GPU idle (the step waits on the host), so running several at once
raises the aggregate throughput almost linearly until the GPU (or the host's cores) saturate.

``throughput`` launches ``pckd-train -m seed=0,…,N-1 hydra/launcher=joblib hydra.launcher.n_jobs=N`` for
each N of ``--runs`` (the launcher users run, not a stand-in) and prints one JSON line per N: wall time,
aggregate epochs/s, and the peak memory of each run's process (GPU memory from ``nvidia-smi`` on CUDA,
resident memory on CPU). The wall time includes each launch's start-up (imports, data upload, cuDNN
warm-up), so use enough ``--epochs`` for it to matter little. The teacher's weights are random: speed does
not depend on them.

``row`` trains a ``benchmarks/compare.py`` profile with its student runs packed: the teacher(s) first, then
the students in ``--jobs`` processes at once, then the report. Each process is an ordinary ``compare()`` over
a part of the methods, so finished runs are skipped and an interrupted row resumes. ``--epochs`` shortens
the schedule (lr milestones and DKD's warm-up scaled with it) when the published 240 epochs do not fit.

    python benchmarks/packed_runs.py throughput --runs 1 2 4 8 --epochs 3 --root .device_data
    python benchmarks/packed_runs.py row --profile paper-row --root .device_data --out outputs/paper_row --jobs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # a plain checkout without `pip install -e .`
    sys.path.append(str(REPO / "src"))
if str(REPO / "benchmarks") not in sys.path:  # its sibling compare, also when loaded from a file path
    sys.path.append(str(REPO / "benchmarks"))
if TYPE_CHECKING:  # imported where used: it loads Hydra and the app, which `throughput` does not need
    from compare import Profile

#: the published schedule that --epochs scales: 240 epochs, lr × 0.1 at these, DKD warmed up over 20
PAPER_EPOCHS = 240
PAPER_MILESTONES = (150, 180, 210)
PAPER_DKD_WARMUP = 20


# ---- memory of a process tree -------------------------------------------------------------------------
def descendants(root: int) -> set[int]:
    """``root`` and every process below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def process_memory_mib(pids: set[int], cuda: bool) -> dict[int, float]:
    """MiB in use by each of ``pids``: GPU memory (nvidia-smi) on CUDA, else resident memory."""
    if cuda:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        rows = subprocess.run(query, capture_output=True, text=True, check=False).stdout.splitlines()
        used = {int(p): float(m) for p, m in (row.split(",") for row in rows if row.strip())}
        return {pid: mib for pid, mib in used.items() if pid in pids}
    memory = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if kib is not None:
            memory[pid] = int(kib) / 1024
    return memory


class PeakMemory:
    """Samples the memory of a process tree every ``interval`` s; ``peaks`` = each process's maximum."""

    def __init__(self, root: int, cuda: bool, interval: float = 0.5) -> None:
        self.root, self.cuda, self.interval = root, cuda, interval
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid, mib in process_memory_mib(descendants(self.root), self.cuda).items():
                self.peaks[pid] = max(mib, self.peaks.get(pid, 0.0))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- throughput: N runs through the joblib launcher ---------------------------------------------------
def random_teacher(name: str, path: Path) -> Path:
    """A randomly initialized ``name`` saved as a teacher checkpoint (speed does not depend on weights)."""
    import torch

    from pckd_lightning.models import create_model

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": create_model(name, num_classes=100).state_dict()}, path)
    return path


def launch_packed(n: int, epochs: int, base: list[str], out: Path) -> list[str]:
    """The ``pckd-train`` multirun that packs ``n`` seeds of one run onto the machine."""
    seeds = ",".join(str(s) for s in range(n))
    return [
        sys.executable,
        "-m",
        "pckd_lightning.train",
        "-m",
        f"seed={seeds}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n}",
        f"trainer.max_epochs={epochs}",
        f"paths.log_dir={out}",
        f"hydra.sweep.dir={out}",
        f"paths.cache_dir={out / 'cache'}",
        *base,
    ]


def throughput(runs: list[int], epochs: int, base: list[str], out: Path, cuda: bool) -> list[dict]:
    from pckd_lightning.run.origin import code_version, machine_of  # the app, loaded where used

    rows = []
    origin = {"code": code_version(), "machine": machine_of("cuda" if cuda else "cpu")}  # once
    paths = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
    }  # the runs import the package without an install
    for n in runs:
        folder = out / f"runs{n}"
        start = time.perf_counter()
        with (
            subprocess.Popen(
                launch_packed(n, epochs, base, folder),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            ) as proc,
            PeakMemory(proc.pid, cuda) as memory,
        ):
            log = proc.communicate()[0].decode(errors="replace")
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(log[-4000:], file=sys.stderr)
            raise SystemExit(f"packed_runs: {n} runs failed (exit {proc.returncode}); its log is above")
        finished = len(list(folder.rglob("summary.json")))
        # the N heaviest processes are the runs (the launcher's own process holds no GPU memory)
        per_run = sorted(memory.peaks.values(), reverse=True)[:n]
        row = {
            "bench": "packed_runs",
            "runs": n,
            "finished": finished,
            "epochs": epochs,
            "wall_s": round(wall, 2),
            "epochs_per_s": round(n * epochs / wall, 4),
            "memory": "cuda" if cuda else "rss",
            "peak_mib_per_run": [round(m) for m in per_run],
            **origin,
            "overrides": base,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    for line in describe(rows):
        print(line, flush=True)
    return rows


def describe(rows: list[dict]) -> list[str]:
    """A line per row: its rate against one run alone where the same call measured one (``--runs 1 ...``),
    else its absolute rate; its peak memory per run, or that none was measured."""

    alone = next((row["epochs_per_s"] for row in rows if row["runs"] == 1), None)
    described = []
    for row in rows:
        each = row["epochs_per_s"] / row["runs"]
        relative = (
            f"each at {each / alone:.2f}x the speed of one alone" if alone else f"each {each:.3f} epochs/s"
        )
        peaks = row["peak_mib_per_run"]
        peak = f"peak {max(peaks)} MiB per run" if peaks else "peak per run not measured"
        described.append(
            f"{row['runs']} runs: {row['epochs_per_s']:.3f} epochs/s in all ({relative}), {peak}"
        )
    return described


# ---- a compare.py profile with its students packed ----------------------------------------------------
def scaled_profile(name: str, epochs: int | None, overrides: list[str]) -> Profile:
    """The compare profile ``name``, on ``epochs`` epochs (the paper's schedule scaled) plus ``overrides``."""
    import compare

    profile = compare.PROFILES[name]
    scaled = []  # before the caller's overrides, which win
    method_overrides = dict(profile.method_overrides)
    if epochs is not None:
        milestones = [max(1, round(m * epochs / PAPER_EPOCHS)) for m in PAPER_MILESTONES]
        scaled.append(f"lr_milestones=[{','.join(str(m) for m in milestones)}]")
        warmup = max(1, round(PAPER_DKD_WARMUP * epochs / PAPER_EPOCHS))
        method_overrides["dkd"] = (
            *method_overrides.get("dkd", ()),
            f"distill.terms.dkd.warmup_epochs={warmup}",
        )
        profile = dataclasses.replace(profile, teacher_epochs=epochs, student_epochs=epochs)
    return dataclasses.replace(
        profile, overrides=(*profile.overrides, *scaled, *overrides), method_overrides=method_overrides
    )


def row(name: str, root: str, out: Path, jobs: int, epochs: int | None, overrides: list[str]) -> str:
    """Teachers, then the students in ``jobs`` processes at once, then the report's markdown."""
    import compare

    profile = scaled_profile(name, epochs, overrides)
    start = time.perf_counter()
    compare.compare(dataclasses.replace(profile, methods=()), root, out)  # the teacher(s) alone
    print(f"[row] teachers done in {time.perf_counter() - start:.0f} s", flush=True)
    groups = [profile.methods[i::jobs] for i in range(min(jobs, len(profile.methods)))]
    common = ["--profile", name, "--root", root, "--out", str(out), "--jobs", "1"]
    common += [] if epochs is None else ["--epochs", str(epochs)]
    common += [f"--override={o}" for o in overrides]
    workers = [
        subprocess.Popen([sys.executable, __file__, "row", *common, "--methods", *group]) for group in groups
    ]
    failed = [" ".join(g) for g, w in zip(groups, workers, strict=True) if w.wait() != 0]
    if failed:
        raise SystemExit(
            f"packed_runs row: the runs of {failed} failed (their logs are above); rerun to resume"
        )
    print(f"[row] students done in {time.perf_counter() - start:.0f} s ({len(groups)} at once)", flush=True)
    return compare.compare(profile, root, out)  # everything is finished: skips all, writes the report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("throughput", help="aggregate epochs/s and memory for 1, 2, 4, 8 concurrent runs")
    t.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8])
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--root", default=str(REPO / ".device_data"), help="holds cifar-100-python")
    t.add_argument("--data", default="cifar100_gpu", help="conf/data/<data>.yaml")
    t.add_argument("--pair", default="resnet56:resnet20", help="teacher:student")
    t.add_argument("--method", default="pckd")
    t.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    t.add_argument("--out", type=Path, default=REPO / "outputs" / "packed_runs")
    t.add_argument("--override", action="append", default=[], help="any Hydra override; repeat it")
    r = commands.add_parser("row", help="a compare.py profile, its students packed onto the machine")
    r.add_argument("--profile", default="paper-row")
    r.add_argument("--root", default=str(REPO / ".device_data"))
    r.add_argument("--out", type=Path, default=REPO / "outputs" / "paper_row")
    r.add_argument("--jobs", type=int, default=4, help="student runs at once")
    r.add_argument("--epochs", type=int, default=None, help="shorter schedule (default: the profile's)")
    r.add_argument("--methods", nargs="+", default=None, help="only these (what each packed process runs)")
    r.add_argument("--override", action="append", default=[], help="any Hydra override; repeat it")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.command == "throughput":
        teacher, student = args.pair.split(":")
        checkpoint = random_teacher(teacher, args.out / "random_teachers" / f"{teacher}.pth")
        base = [
            f"data={args.data}",
            f"data.root={args.root}",
            "model=cifar100_pair",
            f"model.teacher.name={teacher}",
            f"model.student.name={student}",
            f"model.teacher.checkpoint={checkpoint}",
            f"distill={args.method}",
            "callbacks.progress_bar=null",
            *(["trainer.accelerator=cpu"] if args.device == "cpu" else []),
            *args.override,
        ]
        throughput(args.runs, args.epochs, base, args.out, cuda=args.device == "cuda")
    elif args.methods is not None:  # one packed process of a row
        import compare

        profile = scaled_profile(args.profile, args.epochs, args.override)
        compare.compare(dataclasses.replace(profile, methods=tuple(args.methods)), args.root, args.out)
    else:
        print(row(args.profile, args.root, args.out, args.jobs, args.epochs, args.override))


if __name__ == "__main__":
    main()

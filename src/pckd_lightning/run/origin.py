"""Where numbers come from: the code that made them (its git commit, whether the checkout differed) and the
machine they were measured on; read by ``summary.json`` and by the benchmark scripts' lines."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch

import pckd_lightning


def code_version(source: Path = Path(pckd_lightning.__file__).parent) -> dict[str, Any]:
    """The library's version and, when it runs from a git checkout of itself, the commit and whether the
    checkout differs from it (a tracked file changed, or a file git does not ignore added to the package or
    ``conf/``, where a run may use it by ``_target_``): which code made a result (read as the run starts).
    Commit None: not a checkout in which the package is tracked (a wheel, also one installed inside another
    repository)."""
    version: dict[str, Any] = {"version": pckd_lightning.__version__, "commit": None, "dirty": None}

    def git(*args: str) -> str:
        command = ["git", "--no-optional-locks", "-C", str(source), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")
        version["commit"] = git("rev-parse", "HEAD")
        top = Path(git("rev-parse", "--show-toplevel"))
        added = git("ls-files", "--others", "--exclude-standard", "--", str(source), str(top / "conf"))
        version["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no") or added)
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def machine(trainer: L.Trainer) -> dict[str, Any]:
    """Where the numbers were measured: the device the run trained on, how many, and the software."""
    return machine_of(trainer.strategy.root_device, trainer.world_size)


def machine_of(device: torch.device | str, devices: int = 1) -> dict[str, Any]:
    """:func:`machine` for a measurement without a trainer (the benchmark scripts)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "devices": devices,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "platform": platform.platform(),
    }


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

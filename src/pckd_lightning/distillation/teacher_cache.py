"""The teacher's outputs stored once per sweep: float16, memory-mapped, per (epoch, image, view).

With one augmentation stream (``data.aug_seed``) a frozen teacher's outputs for an (epoch, image, view) are
the same in every run of a sweep, so the first run writes them and the others read them instead of running
the teacher (as FKD stores soft labels ahead of training). A cache folder holds one cache, for one key: the
teacher file's SHA-256 and every setting that changes the teacher's inputs or arithmetic. Another key is
refused, naming what differs. Each (epoch, image) row is marked filled only after its values are written, so
a writer killed midway leaves rows that are computed again (and filled), never read. DDP ranks write the
disjoint images their samplers give them into the same files.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pckd_lightning.atomic import atomic_write_text
from pckd_lightning.errors import ConfigError
from pckd_lightning.upgrades import upgrade_data_section

log = logging.getLogger(__name__)

META = "meta.json"
FILLED = "filled.u8"
GIB = 1 << 30


@dataclass(frozen=True)
class CacheLayout:
    """What the cache holds: ``outputs`` maps an output's name (``logits``, ``pooled``) to its width."""

    epochs: int
    images: int
    views: int
    outputs: dict[str, int]

    @property
    def bytes(self) -> int:
        """float16 values plus one filled-flag byte per (epoch, image)."""
        rows = self.epochs * self.images
        return rows * self.views * sum(self.outputs.values()) * 2 + rows


class TeacherCache:
    """Read and write the teacher's outputs for batches of ``(epoch, images)``; see the module's docstring."""

    def __init__(
        self, folder: str | Path, key: Mapping[str, Any], layout: CacheLayout, max_gib: float
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.key = json.loads(json.dumps(dict(key), sort_keys=True, default=str))
        self.layout = layout
        size = layout.bytes / GIB
        if size > max_gib:
            raise ConfigError(
                f"the teacher cache would take {size:.2f} GiB ({layout.epochs} epochs x {layout.images} images x "
                f"{layout.views} views, outputs {layout.outputs}, float16), over teacher.cache_max_gib={max_gib}; "
                "raise teacher.cache_max_gib, or train without a cache (teacher.cache=null)"
            )
        with self._locked():  # one creator, under DDP too
            meta = self.folder / META
            if meta.is_file():
                self._check_key(json.loads(meta.read_text()))
            else:
                log.info("teacher cache: %.3f GiB at %s (float16)", size, self.folder)
                for name, shape in self._shapes().items():
                    np.lib.format.open_memmap(self.folder / name, "w+", self._dtype(name), shape).flush()
                atomic_write_text(meta, json.dumps({"key": self.key, "layout": asdict(layout)}, indent=2))
        self._arrays = {name: np.load(self.folder / name, mmap_mode="r+") for name in self._shapes()}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        e, n, v = self.layout.epochs, self.layout.images, self.layout.views
        shapes = {f"{name}.f16": (e, n, v, width) for name, width in self.layout.outputs.items()}
        return shapes | {FILLED: (e, n)}

    @staticmethod
    def _dtype(name: str) -> type:
        return np.uint8 if name == FILLED else np.float16

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _check_key(self, meta: dict[str, Any]) -> None:
        written = {**meta.get("key", {}), "layout": meta.get("layout")}
        if isinstance(written.get("data"), dict):  # a cache written before data.image_size had a home
            upgrade_data_section(written["data"])
        wanted = {**self.key, "layout": asdict(self.layout)}
        differs = sorted(k for k in set(written) | set(wanted) if written.get(k) != wanted.get(k))
        if differs:
            listed = ", ".join(f"{k}: {written.get(k)!r} (cache) vs {wanted.get(k)!r} (run)" for k in differs)
            raise ConfigError(
                f"the teacher cache at {self.folder} was written for other settings ({listed}); its outputs "
                "are not this run's teacher's. Point teacher.cache at another folder (one per teacher and data "
                "setting), or delete this one"
            )

    def filled(self, epoch: int, images: torch.Tensor) -> bool:
        """Whether every row of ``images`` in ``epoch`` was written completely."""
        return bool(self._arrays[FILLED][epoch, images.cpu().numpy()].all())

    def filled_fraction(self) -> float:
        return float(self._arrays[FILLED].mean())

    def read(self, epoch: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored outputs of ``images`` (``[B]``) in ``epoch``, each ``[B * views, width]`` float16, image-major
        as the step flattens its views; only call it for filled rows."""
        rows = images.cpu().numpy()
        return {
            name: torch.from_numpy(np.ascontiguousarray(self._arrays[f"{name}.f16"][epoch, rows])).flatten(
                0, 1
            )
            for name in self.layout.outputs
        }

    def write(self, epoch: int, images: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> None:
        """Store ``outputs`` (each ``[B * views, width]``, image-major) of ``images`` in ``epoch``; the rows are
        marked filled only once every output's values are flushed."""
        rows = images.cpu().numpy()
        views = self.layout.views
        for name in self.layout.outputs:
            values = outputs[name].detach().to("cpu", torch.float16).unflatten(0, (len(rows), views))
            array = self._arrays[f"{name}.f16"]
            array[epoch, rows] = values.numpy()
            array.flush()
        self._arrays[FILLED][epoch, rows] = 1
        self._arrays[FILLED].flush()

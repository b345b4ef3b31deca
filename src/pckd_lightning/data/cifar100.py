"""CIFAR-100 read straight from the standard ``cifar-100-python`` pickles, validated by structure.

We read the pickles ourselves (rather than through torchvision) because a valid copy may have checksums
that differ from the canonical download (e.g. a rebuilt copy with another image order), which torchvision
would reject or re-download; what matters is the structure: shapes, dtypes, label ranges and counts.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pckd_lightning.data.base import ClassificationDataModule
from pckd_lightning.data.datasets import ArraySource
from pckd_lightning.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from pckd_lightning.errors import ConfigError, DataError

FOLDER = "cifar-100-python"
NUM_CLASSES = 100
IMAGE_SIZE = 32
#: official split sizes, checked unless a deliberately cut-down copy is used (check_sizes=False)
SPLIT_SIZES = {"train": 50_000, "test": 10_000}


def _fix_hint(root: Path) -> str:
    return (
        f"Fix: point data.root at the folder that contains '{FOLDER}' (e.g. data.root=../shared/data), "
        f"set data.download=true on a machine with network access, or copy the standard '{FOLDER}' folder "
        f"(files train, test, meta) into {root}."
    )


def _unpickle(path: Path, root: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        problem = f"{path} is not a file" if path.exists() else f"missing file {path}"
        raise DataError(f"CIFAR-100: {problem}; expected {what}. {_fix_hint(root)}")
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # any unpickling failure means the same thing: not a CIFAR-100 pickle
        raise DataError(
            f"CIFAR-100: cannot unpickle {path} ({type(e).__name__}: {e}); expected {what}. The file is corrupt "
            f"(a broken download or copy): delete the folder {path.parent}, then set data.download=true on a "
            f"machine with network access or copy the standard '{FOLDER}' folder again (downloading skips "
            "files that exist)"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-100: {path} holds a {type(obj).__name__}; expected {what}. {_fix_hint(root)}")
    return obj


def read_cifar100(root: str | Path, split: str, check_sizes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and fine labels ``[N]`` int64 of ``split`` ('train' or 'test').

    ``root`` is the folder that contains ``cifar-100-python``. Raises :class:`DataError` naming the file,
    what was expected and how to get the data, if anything is missing or malformed.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    folder = root / FOLDER
    if not folder.is_dir():
        raise DataError(f"CIFAR-100: folder {folder} not found. {_fix_hint(root)}")
    path = folder / split
    expected_n = SPLIT_SIZES[split]
    what = f"a dict with 'data' (uint8, {expected_n} x 3072) and 'fine_labels' ({expected_n} ints in [0, 99])"
    d = _unpickle(path, root, what)

    def bad(problem: str) -> DataError:
        return DataError(f"CIFAR-100: {path}: {problem}; expected {what}. {_fix_hint(root)}")

    if "data" not in d or "fine_labels" not in d:
        raise bad(f"keys {sorted(d)[:10]} lack 'data' or 'fine_labels'")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"'data' is {desc}")
    labels = np.asarray(d["fine_labels"])
    if labels.ndim != 1 or len(labels) != len(data) or (len(labels) and labels.dtype.kind not in "iu"):
        raise bad(f"'fine_labels' has shape {labels.shape} and dtype {labels.dtype} for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise bad(f"'fine_labels' range over [{labels.min()}, {labels.max()}]")
    if check_sizes and len(data) != expected_n:
        raise bad(f"it holds {len(data)} images (a partial copy?)")
    missing = np.setdiff1d(np.arange(NUM_CLASSES), labels)
    if len(missing):
        raise bad(f"{len(missing)} of the 100 classes have no image (e.g. class {missing[0]})")
    images = data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)  # R,G,B planes -> HWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_cifar100_class_names(root: str | Path) -> list[str]:
    """The 100 fine class names, in label order, from ``cifar-100-python/meta``."""
    root = Path(root)
    path = root / FOLDER / "meta"
    what = "a dict with 'fine_label_names' (100 strings)"
    names = _unpickle(path, root, what).get("fine_label_names")
    if not isinstance(names, list | tuple) or len(names) != NUM_CLASSES:
        raise DataError(f"CIFAR-100: {path}: bad 'fine_label_names'; expected {what}. {_fix_hint(root)}")
    return [str(n) for n in names]


class CIFAR100DataModule(ClassificationDataModule):
    """CIFAR-100 (train = the 50,000 training images, val/test = the 10,000 test images), 32x32 RGB.

    ``root`` is the folder containing ``cifar-100-python``. ``download=True`` fetches the data with
    torchvision, but only when files are missing (a valid copy with other checksums is kept).
    ``check_sizes=False`` accepts a cut-down copy (any size, all 100 classes still required).
    ``image_size`` is 32, the one size the files hold: it is a parameter so that every data config declares
    ``data.image_size``, which the methods with adapters read.
    """

    mean = CIFAR100_MEAN
    std = CIFAR100_STD
    flip_p = 0.5
    known_classes = NUM_CLASSES

    def __init__(
        self,
        root: str | Path,
        download: bool = False,
        check_sizes: bool = True,
        image_size: int = IMAGE_SIZE,
        **kwargs: Any,
    ):
        if image_size != IMAGE_SIZE:
            raise ConfigError(
                f"data.image_size={image_size!r}: CIFAR-100's images are {IMAGE_SIZE}x{IMAGE_SIZE}, the one size "
                f"it takes. Fix: leave data.image_size at {IMAGE_SIZE} (the methods' adapters follow it)."
            )
        super().__init__(**kwargs)
        self.root = Path(root)
        self.download = download
        self.check_sizes = check_sizes
        self._class_names: list[str] | None = None

    @property
    def image_size(self) -> int:
        return IMAGE_SIZE

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._maybe_download()
            self._class_names = read_cifar100_class_names(self.root)
        return self._class_names

    def prepare_data(self) -> None:
        self._maybe_download()

    def _maybe_download(self) -> None:
        folder = self.root / FOLDER
        if not self.download or all((folder / f).is_file() for f in ("train", "test", "meta")):
            return
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(self.root), train=True, download=True)
        except Exception as e:  # network, disk or checksum failure: say how to get the data by hand
            raise DataError(
                f"CIFAR-100: download into {self.root} failed ({type(e).__name__}: {e}). "
                + _fix_hint(self.root)
            ) from e

    def _load_sources(self) -> tuple[ArraySource, ArraySource]:
        self._maybe_download()
        train = ArraySource(*read_cifar100(self.root, "train", self.check_sizes))
        test = ArraySource(*read_cifar100(self.root, "test", self.check_sizes))
        return train, test

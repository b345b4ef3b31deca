"""Shared fixtures: config composition against the repository's conf/ and the real-data location."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``train.yaml`` like the CLI would; ``output_dir`` stands in for Hydra's run folder."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.cache_dir = str(output_dir / "cache")
    return cfg


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster than two on a shared CPU (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: skips a test where the real CIFAR-100 (../shared/data) is absent
needs_cifar = pytest.mark.skipif(
    not (SHARED_DATA / "cifar-100-python").is_dir(),
    reason=f"real CIFAR-100 not found at {SHARED_DATA}/cifar-100-python (../shared/data)",
)


@pytest.fixture
def cifar_root() -> Path:
    if not (SHARED_DATA / "cifar-100-python").is_dir():
        pytest.skip(f"real CIFAR-100 not found at {SHARED_DATA}/cifar-100-python (../shared/data)")
    return SHARED_DATA


def dump_pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def write_fake_cifar(root: Path, n: int = 100) -> Path:
    """A cut-down but well-formed ``cifar-100-python`` folder: n images per split, every class present."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        dump_pickle(
            folder / split,
            {"data": data, "fine_labels": [i % 100 for i in range(n)], "coarse_labels": [0] * n},
        )
    dump_pickle(
        folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}
    )
    return folder

"""Shared fixtures and the session's environment (W&B offline); plain helpers live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import SHARED_DATA

# `make test` runs two pytest-xdist workers on two cores: one intra-op thread each (and in the runs they start,
# which read OMP_NUM_THREADS), else four threads fight over two cores and tiny ops slow down many times over
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster than two on a shared CPU (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cifar_root() -> Path:
    if not (SHARED_DATA / "cifar-100-python").is_dir():
        pytest.skip(f"real CIFAR-100 not found at {SHARED_DATA}/cifar-100-python (../shared/data)")
    return SHARED_DATA

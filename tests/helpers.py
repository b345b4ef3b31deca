"""Plain helpers the tests share (``from helpers import ...``): config composition against the repository's
conf/, the real-data location, fake data, tiny runs. Fixtures stay in conftest.py, which no test imports."""

from __future__ import annotations

import csv
import importlib.util
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from pckd_lightning.distillation import DistillationModule
from pckd_lightning.losses.terms.base import InitStageTerm
from pckd_lightning.models import create_model
from pckd_lightning.run import fit
from pckd_lightning.run.build import build_terms, instantiate

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
#: every distill config, by name
METHODS = sorted(p.stem for p in (CONF_DIR / "distill").glob("*.yaml"))
SHARED_DATA = REPO.parent / "shared" / "data"


def load_benchmark(name: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the scripts are not a package), registered in sys.modules."""
    spec = importlib.util.spec_from_file_location(
        module_name or f"bench_{name}", REPO / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PCKD_TRAIN = str(Path(sys.executable).with_name("pckd-train"))


def pckd_train(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """``pckd-train args`` started from the repository as a user starts it (no HYDRA_FULL_ERROR), plus ``env``."""
    user_env = {**os.environ, "WANDB_MODE": "offline"}
    user_env.pop("PCKD_LAUNCH_ID", None)  # each launch names its own folders
    user_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [PCKD_TRAIN, *args],
        cwd=REPO,
        env=user_env | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``train.yaml`` like the CLI would; ``output_dir`` stands in for Hydra's run folder."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.cache_dir = str(output_dir / "cache")
    return cfg


#: skips a test where the real CIFAR-100 (../shared/data) is absent
needs_cifar = pytest.mark.skipif(
    not (SHARED_DATA / "cifar-100-python").is_dir(),
    reason=f"real CIFAR-100 not found at {SHARED_DATA}/cifar-100-python (../shared/data)",
)


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


#: the quickest real run: a digits student from scratch, 8x8 images, two training batches, one validation batch
SCRATCH_RUN = [
    "model=digits_scratch_resnet8",
    "distill=ce",
    "data.image_size=8",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
]
#: methods whose configured step CapturedStep does not compute, and why (test_distillation_captured proves
#: every other method's whole step one graph, or the rows it is made of; test_losses_capture proves these
#: methods' loss path one graph)
NOT_CAPTURED = {
    method: "DOT's optimizer: two momenta, split by the task gradient taken from the step's retained graph"
    for method in ("dkd_dot", "kd_dot")
}
#: quiet runs: the CSV record only, no progress bar, no loader workers
QUIET = ["logger=csv", "callbacks.progress_bar=null", "data.num_workers=0"]


def save_teacher(path: Path, name: str, num_classes: int) -> Path:
    torch.manual_seed(0)
    torch.save({"model": create_model(name, num_classes=num_classes).state_dict()}, path)
    return path


def two_step_run(tmp_path: Path, method: str, *overrides: str) -> tuple[dict, dict[str, list[float]]]:
    """Two steps of ``distill=method`` on the digits pair resnet20 -> resnet8 (8x8 images), after one init
    epoch where the method has an init stage (AB, FSP, FT; their published 30 cost minutes in bf16 on CPU);
    the summary and every term's logged epoch values."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    teacher = save_teacher(tmp_path / "teacher.pth", "resnet20", 10)
    cfg = compose_config(
        [
            f"distill={method}",
            f"model.teacher.checkpoint={teacher}",
            "data.image_size=8",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            *QUIET,
            *overrides,
        ],
        output_dir=tmp_path,
    )
    init_stage = (cfg.distill.get("callbacks") or {}).get("init_stage")
    if init_stage is not None:
        with open_dict(cfg):
            init_stage.init_epochs = 1
    summary = fit(cfg)  # a non-finite loss would raise NonFiniteLossError
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    values = {t: [float(r[f"train/{t}"]) for r in rows if r.get(f"train/{t}")] for t in summary["terms"]}
    return summary, values


def method_module(method: str, **sgd: float | bool) -> tuple[DistillationModule, tuple[torch.Tensor, ...]]:
    """``method`` on a tiny pair (resnet8 → resnet8, 8x8 images: few operations to trace), its callbacks set
    up, its configured optimizer (conf/optimizer/sgd.yaml, ``sgd`` overriding), and a batch of 4."""
    cfg = compose_config([f"distill={method}", "data.image_size=8"])
    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", num_classes=10),
        teacher=create_model("resnet8", num_classes=10),
        terms=build_terms(cfg.distill),
        optimizer=partial(instantiate(cfg.optimizer), **sgd),
        num_classes=10,
        train_labels=torch.arange(64) % 10,
        preview=None if cfg.distill.get("preview") is None else instantiate(cfg.distill.preview),
    )
    for callback in (cfg.distill.get("callbacks") or {}).values():
        instantiate(callback).setup(None, module, "fit")  # DOT registers its optimizer here
    if module.step.preview is not None:
        module.step.preview.set_max_epochs(10)
    for term in module.terms.values():
        if isinstance(term, InitStageTerm):  # AB, FSP, FT: the main step, as after their init stage
            term.mark_initialized()
        term.on_train_epoch_start(2)
    views = cfg.distill.views
    shape = (4, views, 3, 8, 8) if views > 1 else (4, 3, 8, 8)
    module.train()
    module.step((torch.randn(shape), torch.arange(4), torch.arange(4)))  # CRD's first-step host checks
    return module, (torch.randn(shape), torch.arange(4) % 10, torch.arange(4, 8))


def wandb_record(run_dir: Path) -> bytes:
    """The offline W&B record of the run fitted in this process, read once W&B's service has written it.

    ``finish()`` returns before W&B's service process has flushed the record (about a second later); shutting
    the service down waits for it.
    """
    import wandb

    wandb.teardown()
    (record,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return record.read_bytes()


def run_ranks(fn: Callable[..., None], world: int, *args: object) -> None:
    """``fn(rank, world, *args)`` in ``world`` processes forked from a server that imported the library once:
    ``mp.spawn`` would start each rank afresh, importing torch and Lightning again (~10 s of CPU a rank). The
    ranks see the environment of the server's start (the first call), not a variable set by a test since."""
    # read when the server starts; an installed module, as the server's sys.path lacks tests/
    multiprocessing.set_forkserver_preload(["pckd_lightning.run"])
    torch.multiprocessing.start_processes(fn, args=(world, *args), nprocs=world, start_method="forkserver")


def free_port() -> str:
    """A free local TCP address for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def avg_pool_2x(f: list) -> list:
    """[C][H][W] -> [C][H/2][W/2] by averaging 2x2 blocks."""
    return [
        [
            [
                (ch[2 * i][2 * j] + ch[2 * i][2 * j + 1] + ch[2 * i + 1][2 * j] + ch[2 * i + 1][2 * j + 1])
                / 4
                for j in range(len(ch[0]) // 2)
            ]
            for i in range(len(ch) // 2)
        ]
        for ch in f
    ]


class SaveAt(L.Callback):
    """Saves a checkpoint to ``path`` after batch ``batch`` of epoch ``epoch`` (0-indexed), inside the epoch, as
    Lightning's Slurm requeue does; a config adds it: ``+callbacks.save._target_=helpers.SaveAt``."""

    def __init__(self, epoch: int, batch: int, path: str) -> None:
        self.epoch, self.batch, self.path = epoch, batch, path

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        if (trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx) == (self.epoch, self.batch):
            trainer.save_checkpoint(self.path)


class SignalAt(L.Callback):
    """Sends this process ``signum`` (SIGTERM: Slurm's time limit; SIGINT: Ctrl-C) as ``hook`` runs; a config
    adds it: ``+callbacks.signal._target_=helpers.SignalAt``."""

    def __init__(self, hook: str, signum: str = "SIGTERM") -> None:
        setattr(self, hook, lambda *_: os.kill(os.getpid(), signal.Signals[signum]))

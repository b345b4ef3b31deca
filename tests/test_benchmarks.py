"""Smoke tests of the benchmark scripts (tiny models, one or two steps, CPU)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from helpers import compose_config, load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def step_throughput() -> ModuleType:
    return load_benchmark("step_throughput")


pytestmark = pytest.mark.usefixtures("one_thread")


def _json_line(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in the output:\n{out}"
    return json.loads(lines[-1])


@pytest.mark.parametrize(
    ("method", "views", "extra"),
    [("kd", 1, []), ("pckd", 4, ["--breakdown"])],
)
def test_step_throughput_prints_a_parsable_json_line(step_throughput, capsys, method, views, extra):
    argv = ["--pair", "resnet20:resnet8", "--method", method, "--device", "cpu", "--steps", "2"]
    argv += ["--warmup", "1", "--batch-size", "8", "--threads", "1", *extra]
    returned = step_throughput.main(argv)
    out = capsys.readouterr().out
    result = _json_line(out)
    assert result == json.loads(json.dumps(returned))
    assert "ratio full/bare" in out
    assert (result["pair"], result["method"], result["device"]) == ("resnet20:resnet8", method, "cpu")
    assert result["views"] == views and result["steps"] == 2 and result["batch_images"] == 8
    assert result["ratio"] > 0 and result["bare_img_s"] > 0 and result["full_img_s"] > 0
    assert result["code"]["version"] and result["options"]["steps"] == 2  # which code, which command
    assert result["bare_saved_mb"] > 0 and result["full_saved_mb"] > 0
    assert 0 < result["bare_ops"] < result["full_ops"] and "ATen" in result["ops_method"]
    if method == "pckd":
        assert result["preview"] is True
        assert set(result["terms"]) == {"ce", "kd", "category_contrast", "center_align", "feature_align"}
        assert set(result["term_ms"]) == {*result["terms"], "preview"}
    else:
        assert result["terms"] == {"ce": 0.1, "kd": 0.9} and result["preview"] is False


def test_step_throughput_builds_the_methods_terms_as_the_app_does(step_throughput, tmp_path):
    from pckd_lightning.run.build import build_terms

    terms, views, preview = step_throughput.load_method("pckd")
    app = compose_config(["distill=pckd"], output_dir=tmp_path).distill
    assert views == app.views == 4
    assert {k: (type(v), v.weight, v.preview) for k, v in terms.items()} == {
        k: (type(v), v.weight, v.preview) for k, v in build_terms(app).items()
    }
    assert (preview.base, preview.schedule) == (1.005, "epoch")
    assert step_throughput.load_method("kd")[2] is None
    with pytest.raises(SystemExit, match="unknown method 'pkcd'"):
        step_throughput.load_method("pkcd")


def test_loader_throughput_on_a_tiny_fake_cifar(tmp_path: Path, capsys):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(200, 3072), dtype=np.uint8)
        with (folder / split).open("wb") as f:
            pickle.dump({"data": data, "fine_labels": [i % 100 for i in range(200)]}, f)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    loader_throughput = load_benchmark("loader_throughput")
    argv = ["--root", str(tmp_path), "--partial", "--workers", "0", "--batches", "3", "--device", "cpu"]
    results = loader_throughput.main([*argv, "--batch-size", "50", "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["path"] for r in lines] == ["dataloader", "gpu_resident"] == [r["path"] for r in results]
    assert all(r["img_s"] > 0 and r["images"] == 3 * 50 for r in lines)
    # where and with which code it was measured, in every line
    assert all(r["code"]["version"] and r["machine"]["device"] == "cpu" for r in lines)
    assert all(r["options"]["batches"] == 3 for r in lines)


def test_loader_throughput_times_only_batches_made_after_the_workers_queue_drained():
    """The workers' queue (prefetch_factor batches each) fills while they start: timed batches taken from it
    would count as free, inflating the rate more the more workers there are."""
    from torch.utils.data import DataLoader

    loader_throughput = load_benchmark("loader_throughput")
    assert loader_throughput.queued_batches(DataLoader(range(8), num_workers=3)) == 6
    assert loader_throughput.queued_batches(DataLoader(range(8), num_workers=3, prefetch_factor=4)) == 12
    assert loader_throughput.queued_batches(DataLoader(range(8))) == 0
    batches = [(torch.zeros(2), torch.zeros(2), None)] * 4
    timed = loader_throughput.time_loader(batches, torch.device("cpu"), batches=3, warmup=2)
    assert timed["warmup_batches"] == 2 and timed["images"] == 6
    samples = [(torch.zeros(3), 0, i) for i in range(16)]
    workers = DataLoader(samples, batch_size=2, num_workers=2)
    timed = loader_throughput.time_loader(workers, torch.device("cpu"), batches=2, warmup=2)
    assert timed["warmup_batches"] == 5 and timed["images"] == 4


def test_op_count_counts_kernels_and_skips_views():
    op_count = load_benchmark("op_count")
    a, b = torch.ones(4), torch.ones(4)
    with op_count.count_ops(torch.device("cpu")) as count:
        c = (a + b).view(2, 2).t()
        (c * 2).sum()
    assert count.total == 3 and dict(count.by_name) == {"add": 1, "mul": 1, "sum": 1}
    with op_count.count_ops(torch.device("cpu"), compiled=True) as skipped:
        a + b
    assert skipped.total is None


def test_the_epoch_timer_stops_before_the_epochs_validation(tmp_path, monkeypatch):
    """Lightning validates before on_train_epoch_end: a slow validation (a loader's workers starting) must not
    enter the timed window of the training steps."""
    import time

    import lightning as L

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its sibling op_count, as when run from benchmarks/
    epoch_time = load_benchmark("epoch_time")

    class SlowValidation(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def validation_step(self, batch, batch_idx):
            time.sleep(1.0)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=2)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(2, 2), batch_size=2)

    timer = epoch_time.StepTimer(warmup=1, result=str(tmp_path / "timing.json"))
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, num_sanity_val_steps=0, callbacks=[timer], **options)
    trainer.fit(SlowValidation())
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["steps"] == 3 and timing["seconds"] < 0.5

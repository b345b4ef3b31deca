"""pckd-eval (top-1/top-5 of a checkpoint) and the exporters (state dict, TorchScript, ONNX)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from helpers import compose_config
from pckd_lightning.evaluate import (
    build_datamodule,
    data_choices,
    data_section,
    evaluate,
    find_run_config,
    load_for_eval,
)
from pckd_lightning.evaluate import main as eval_main
from pckd_lightning.export import export_onnx, export_state_dict, export_torchscript, onnx_exporter_available
from pckd_lightning.models import create_model
from pckd_lightning.run import fit

QUIET = ["logger=csv", "callbacks.progress_bar=null", "data.num_workers=0"]


class FixedLogits(nn.Module):
    """Returns the logits stored for each sample index (x carries the index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.long()]


def test_evaluate_counts_top1_and_top5_exactly():
    # 7 classes; sample i's label ranks 1st, 1st, 2nd, 5th, 6th, 7th among its logits
    ranks = [0, 0, 1, 4, 5, 6]
    logits, labels = [], []
    for i, rank in enumerate(ranks):
        order = torch.arange(7).roll(i)  # classes from the highest logit down
        row = torch.empty(7)
        row[order] = torch.arange(7, 0, -1, dtype=torch.float)
        logits.append(row)
        labels.append(int(order[rank]))
    model = FixedLogits(torch.stack(logits)).train()
    x, y = torch.arange(6), torch.tensor(labels)
    batches = [(x[:4], y[:4], x[:4]), (x[4:], y[4:], x[4:])]  # (x, y, idx) like the data modules
    result = evaluate(model, batches)
    assert result == {"top1": pytest.approx(100 * 2 / 6), "top5": pytest.approx(100 * 4 / 6)}
    assert model.training  # the mode is restored


def test_evaluate_counts_top1_as_training_does_and_refuses_broken_outputs():
    """Exact ties: top-1 is the argmax, as torchmetrics counts it in training's val/top1; NaN outputs (a
    diverged run) give an error, not a chance-level number."""
    from torchmetrics.classification import MulticlassAccuracy

    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([1, 2, 2, 2])
    x = torch.arange(4)
    expected = 100 * MulticlassAccuracy(3, average="micro")(logits, y).item()
    assert evaluate(FixedLogits(logits), [(x, y)])["top1"] == pytest.approx(expected)
    broken = logits.clone()
    broken[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate(FixedLogits(broken), [(x, y)])


def test_data_other_than_the_runs_is_warned_naming_what_differs(tmp_path, caplog):
    """--data replaces the run's data section: a run trained at another image size or on other classes would
    be scored on other pixels or images without a word."""
    import logging

    from omegaconf import OmegaConf

    from pckd_lightning.evaluate import data_section

    trained = OmegaConf.to_container(compose_config(["distill=ce"], output_dir=tmp_path), resolve=True)
    with caplog.at_level(logging.WARNING, logger="pckd_lightning.evaluate"):
        data_section("digits", trained)
    assert not caplog.records  # the run's own data: nothing to say
    trained["data"]["image_size"] = 8
    with caplog.at_level(logging.WARNING, logger="pckd_lightning.evaluate"):
        data_section("digits", trained)
    assert "image_size: 8 in training -> 16 here" in caplog.text and "class_subset" not in caplog.text


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    """A real (tiny) run on the digits: one epoch, two training batches, the whole validation split."""
    folder = tmp_path_factory.mktemp("eval") / "run"
    overrides = ["model=digits_scratch_resnet8", "distill=ce", "trainer.max_epochs=1"]
    summary = fit(compose_config([*overrides, "+trainer.limit_train_batches=2", *QUIET], output_dir=folder))
    return folder, summary


@pytest.mark.slow
def test_pckd_eval_reproduces_the_runs_validation_accuracy(run, capsys):
    folder, summary = run
    assert find_run_config(folder / "checkpoints" / "last.ckpt") == folder / "config.yaml"
    for checkpoint in (folder / "student.pth", folder / "checkpoints" / "last.ckpt"):
        assert eval_main(["--checkpoint", str(checkpoint), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["arch"] == "resnet8" and result["config"] == str(folder / "config.yaml")
        assert result["top1"] == pytest.approx(summary["last_top1"], abs=1e-4)
        assert result["top5"] == pytest.approx(summary["last_top5"], abs=1e-4)
        assert result["num_images"] == 360

    # a bare {"model": sd} far from its run: architecture and data given on the command line
    teacher_like = export_state_dict(load_for_eval(folder / "student.pth").model, folder.parent / "w.pth")
    argv = ["--checkpoint", str(teacher_like), "--arch", "resnet8", "--data", "digits", "--seed", "0"]
    assert eval_main(argv) == 0
    out = capsys.readouterr().out
    assert f"top-1:      {summary['last_top1']:.2f}%" in out and "DigitsDataModule" in out

    assert eval_main(["--checkpoint", str(teacher_like)]) == 2  # no config, no --arch
    assert "--arch" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(teacher_like), "--arch", "resnet20", "--data", "digits"]) == 2
    assert "does not match architecture 'resnet20'" in capsys.readouterr().err


@pytest.mark.slow
def test_pckd_eval_says_what_is_wrong_and_accepts_a_run_folder(run, tmp_path, capsys):
    folder, summary = run
    assert eval_main(["--checkpoint", str(folder), "--json"]) == 0  # a run folder: its student.pth
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["last_top1"], abs=1e-4)
    assert eval_main(["--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth' does not exist" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(tmp_path)]) == 2
    assert "holds no student.pth" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "config.yaml").write_text("model: [unclosed\n")
    assert eval_main(["--checkpoint", str(broken / "student.pth")]) == 2
    assert f"{broken / 'config.yaml'} is not a readable run config" in capsys.readouterr().err


@pytest.mark.slow
def test_pckd_eval_exports_the_runs_student(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "student.pt"
    argv = ["--checkpoint", str(folder / "student.pth"), "--export", "torchscript", "--out", str(out)]
    assert eval_main([*argv, "--no-eval"]) == 0
    assert "exported:" in capsys.readouterr().out
    loaded = load_for_eval(folder / "student.pth")
    scripted = _jit_load(out)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(scripted(x), loaded.model(x), atol=1e-5, rtol=0)


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is marked deprecated
        return torch.jit.load(str(path))


def _model_with_running_stats(name: str) -> nn.Module:
    """A zoo model whose batch-norm statistics are not the defaults, so eval-mode export matters."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.train()  # the exporters must switch to eval mode themselves


@pytest.mark.parametrize("name", ["resnet8", "vgg8"])
def test_exports_give_the_eager_logits(name, tmp_path):
    model = _model_with_running_stats(name)
    example = torch.randn(1, 3, 32, 32)
    x = torch.randn(4, 3, 32, 32)  # another batch size than the example: the batch dimension is dynamic
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()

    state = torch.load(export_state_dict(model, tmp_path / "m.pth"), weights_only=True)["model"]
    fresh = create_model(name, num_classes=10)
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.eval()(x), expected, atol=1e-5, rtol=0)

    scripted = _jit_load(export_torchscript(model, tmp_path / "m.pt", example))
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=0)

    if onnx_exporter_available() is None:
        pytest.skip("ONNX export is not available in this PyTorch (install the export extra)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install .[export])")
    path = export_onnx(model, tmp_path / "m.onnx", example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("data", [d for d in data_choices() if d != "base"])
def test_data_gives_the_data_config_as_hydra_composes_it(data, tmp_path):
    """``--data <name>``: conf/data/<name>.yaml with the base it extends, one plain view, the given root."""
    section = data_section(data, data_root=str(tmp_path))
    assert "defaults" not in section and section["views"] == 1 and section["view_recipe"] == "rotation"
    assert isinstance(section["image_size"], int) and section.get("root", str(tmp_path)) == str(tmp_path)


def test_a_run_trained_with_two_views_is_evaluated_on_one_plain_view(tmp_path):
    """MLKD's run config (weak_strong, 2 views) builds a one-view data module for evaluation."""
    run_data = compose_config(["distill=mlkd"], output_dir=tmp_path).data
    assert (run_data.views, run_data.view_recipe) == (2, "weak_strong")
    section = data_section(run_config={"data": OmegaConf.to_container(run_data, resolve=True)})
    data = build_datamodule(section)
    assert (data.views, data.view_recipe) == (1, "rotation")

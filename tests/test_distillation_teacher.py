"""Teacher loading: accepted checkpoint layouts, freezing, and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pckd_lightning.distillation import load_teacher
from pckd_lightning.distillation.teacher import cast_convolutions, freeze
from pckd_lightning.errors import CheckpointError
from pckd_lightning.models import create_model, list_models


@pytest.fixture
def reference():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10).eval()


@pytest.mark.parametrize("layout", ["model", "lightning", "training script", "plain"])
def test_teacher_loads_from_every_layout_with_identical_logits(tmp_path, reference, layout):
    sd = reference.state_dict()
    payload = {
        "model": {"model": sd},
        "lightning": {
            "state_dict": {f"student.{k}": v for k, v in sd.items()} | {"terms.x.weight": torch.ones(1)}
        },
        "training script": {"epoch": 240, "arch": "resnet8", "state_dict": sd},  # timm's train.py, CRD's
        "plain": sd,
    }[layout]
    path = tmp_path / "t.pth"
    torch.save(payload, path)
    teacher = load_teacher("resnet8", str(path), num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(teacher(x), reference(x))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.weights_file.path == str(path) and len(teacher.weights_file.sha256) == 64


def test_corrupt_file_is_reported(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_teacher("resnet8", str(path), num_classes=10)


def test_other_architecture_is_reported_with_the_keys(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"model": create_model("vgg8", num_classes=10).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"does not match architecture 'resnet8'.*missing keys"):
        load_teacher("resnet8", str(path), num_classes=10)


def test_other_number_of_classes_is_reported(tmp_path, reference):
    path = tmp_path / "t.pth"
    torch.save({"model": reference.state_dict()}, path)
    with pytest.raises(CheckpointError, match="100 classes"):
        load_teacher("resnet8", str(path), num_classes=100)


def test_unset_checkpoint_is_reported():
    with pytest.raises(CheckpointError, match=r"model\.teacher\.checkpoint is not set"):
        load_teacher("resnet8", None, num_classes=10)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("imagenet_")])
def test_convolutions_cast_once_give_the_outputs_of_autocast(name):
    """Every CIFAR architecture (with conv biases, grouped and pre-activation convolutions): bit for bit."""
    torch.manual_seed(0)
    teacher = freeze(create_model(name, num_classes=10))
    x = torch.randn(1, 3, 32, 32)  # one image: the frozen BatchNorm layers use running statistics

    def outputs() -> list[torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = teacher(x, with_features=True)
        return [*out.stages, out.pooled, out.logits]

    expected = outputs()
    convolutions = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
    assert cast_convolutions(teacher, torch.bfloat16) == len(convolutions) > 0
    for got, want in zip(outputs(), expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    for module in teacher.modules():
        for param in module.parameters(recurse=False):
            assert param.dtype == (torch.bfloat16 if isinstance(module, nn.Conv2d) else torch.float32), module

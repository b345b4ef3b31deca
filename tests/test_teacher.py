"""Teacher loading: accepted checkpoint layouts, freezing, and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from pckd_lightning.distillation import load_teacher
from pckd_lightning.errors import CheckpointError
from pckd_lightning.models import create_model


@pytest.fixture
def reference():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10).eval()


@pytest.mark.parametrize("layout", ["model", "lightning", "plain"])
def test_teacher_loads_from_every_layout_with_identical_logits(tmp_path, reference, layout):
    sd = reference.state_dict()
    payload = {
        "model": {"model": sd},
        "lightning": {
            "state_dict": {f"student.{k}": v for k, v in sd.items()} | {"terms.x.weight": torch.ones(1)}
        },
        "plain": sd,
    }[layout]
    path = tmp_path / "t.pth"
    torch.save(payload, path)
    teacher = load_teacher("resnet8", str(path), num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(teacher(x), reference(x))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert len(teacher.checkpoint_sha256) == 64


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

"""``resolve_device``: what a device option (``pckd-eval --device``, the GPU-resident data's ``device``) names."""

from __future__ import annotations

import pytest
import torch

from pckd_lightning.data.gpu_resident import GPUResidentCIFAR100DataModule
from pckd_lightning.devices import resolve_device
from pckd_lightning.errors import ConfigError
from pckd_lightning.evaluate import main as eval_main


def test_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")


def test_cuda_without_cuda_is_a_config_error_in_both_callers(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(device)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        GPUResidentCIFAR100DataModule(str(tmp_path), device="cuda").resident_device  # noqa: B018
    # pckd-eval reports it like its other errors (exit status 2), before reading the checkpoint
    assert eval_main(["--checkpoint", str(tmp_path / "nope.pth"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_and_bare_cuda_name_the_current_cuda_device():
    current = torch.device("cuda", torch.cuda.current_device())
    assert resolve_device("auto") == resolve_device("cuda") == current
    assert resolve_device("cuda") == torch.zeros(1, device="cuda").device

"""Exporting a trained classifier: ``{"model": state_dict}``, TorchScript or ONNX.

Every exporter takes the model (a zoo model, a :class:`~pckd_lightning.distillation.DistillationModule`'s
``student``, or any ``nn.Module`` whose forward returns logits or a ``ModelOutput``) and writes one file;
the exported graph takes an image batch ``[B, C, H, W]`` and returns the logits ``[B, num_classes]``.
The model is exported in eval mode (batch-norm running statistics) and its mode is restored afterwards.

From the command line: ``pckd-eval --checkpoint RUN/student.pth --export onnx --out student.onnx``
(see :mod:`pckd_lightning.evaluate`). From Python::

    from pckd_lightning.export import export_onnx, export_state_dict, export_torchscript
    export_torchscript(model, "student.pt", torch.randn(1, 3, 32, 32))
    export_onnx(model, "student.onnx", torch.randn(1, 3, 32, 32))   # needs `pip install .[export]`

ONNX export uses PyTorch's ``torch.export``-based exporter when ``onnxscript`` (and ``onnx``) are installed
(the ``export`` extra), otherwise the legacy TorchScript-based exporter where this PyTorch still has it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pckd_lightning.atomic import atomic_open
from pckd_lightning.models.base import ModelOutput
from pckd_lightning.modes import eval_mode

EXPORT_FORMATS = ("state_dict", "torchscript", "onnx")


class LogitsOnly(nn.Module):
    """``model(x)`` reduced to its logits, so exported graphs have exactly one output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.logits if isinstance(out, ModelOutput) else out


def _prepare_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _example_on(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    param = next(model.parameters(), None)
    return example_input.to(param.device) if param is not None else example_input


def export_state_dict(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``{"model": model.state_dict()}`` (atomically): the layout teachers and ``pckd-eval`` load."""
    path = Path(path).expanduser()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_open(path) as f:
        torch.save({"model": state}, f)
    return path


def export_torchscript(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor) -> Path:
    """Trace ``model`` on ``example_input`` and save it with ``torch.jit.save`` (load with ``torch.jit.load``).

    Tracing records the forward pass of the example: the traced module accepts any batch size, but shape
    decisions are frozen at the example's image size (e.g. ``vgg*`` pools differently for 64x64 inputs),
    so export with the resolution you will run at. PyTorch marks TorchScript as deprecated in favour of
    ``torch.export``; those deprecation warnings and the tracer's warnings are silenced here.
    """
    path = _prepare_path(path)
    wrapper = LogitsOnly(model)
    with eval_mode(wrapper), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, _example_on(model, example_input))
        traced.save(str(path))
    return path


def onnx_exporter_available() -> str | None:
    """``"dynamo"`` when ``onnx`` and ``onnxscript`` are installed, ``"legacy"`` when only the old exporter can
    run, None when ONNX export is impossible here."""
    if importlib.util.find_spec("onnxscript") and importlib.util.find_spec("onnx"):
        return "dynamo"
    return "legacy" if hasattr(torch.onnx, "export") else None


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: torch.Tensor,
    opset_version: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` to one ONNX file: input ``"input"`` ``[B, C, H, W]``, output ``"logits"``.

    ``dynamic_batch``: the batch dimension is symbolic, so any batch size runs (the example's batch size
    then does not matter); the image size is the example's, as for :func:`export_torchscript`. Uses the
    ``torch.export``-based exporter when ``onnx`` and ``onnxscript`` are installed (``pip install
    pckd-lightning[export]``), falling back to the legacy TorchScript-based exporter when they are not or
    when ``torch.export`` fails on the model. The weights are stored in the file itself.
    """
    path = _prepare_path(path)
    mode = onnx_exporter_available()
    if mode is None:
        raise RuntimeError("ONNX export is not available: install the export extra (onnx, onnxscript)")
    params = inspect.signature(torch.onnx.export).parameters
    if mode == "dynamo" and "dynamo" in params:
        try:
            return _onnx_export(model, path, example_input, opset_version, dynamic_batch, True, params)
        except Exception as err:  # torch.export cannot capture every model; the legacy path may still work
            warnings.warn(
                f"torch.export-based ONNX export failed ({type(err).__name__}: {str(err)[:200]}); "
                "retrying with the legacy exporter",
                stacklevel=2,
            )
    return _onnx_export(model, path, example_input, opset_version, dynamic_batch, False, params)


def _onnx_export(
    model: nn.Module,
    path: Path,
    example_input: torch.Tensor,
    opset_version: int | None,
    dynamic_batch: bool,
    dynamo: bool,
    params: Mapping[str, inspect.Parameter],
) -> Path:
    wrapper = LogitsOnly(model)
    example = _example_on(model, example_input)
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    if opset_version is not None:
        kwargs["opset_version"] = opset_version
    if dynamo:
        if dynamic_batch:
            if example.shape[0] < 2:  # torch.export specializes a dimension of size 1: trace with 2
                example = example.expand(2, *example.shape[1:]).contiguous()
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        kwargs.update(dynamo=True, verbose=False)
        if "external_data" in params:
            kwargs["external_data"] = False
    else:
        if "dynamo" in params:
            kwargs["dynamo"] = False
        if dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with eval_mode(wrapper), torch.no_grad(), warnings.catch_warnings(), _quiet_stdout():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (example,), str(path), **kwargs)
    return path


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The torch.export-based exporter prints its progress (``[torch.onnx] ...``) to stdout; hide it."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def export_model(model: nn.Module, fmt: str, path: str | os.PathLike, example_input: torch.Tensor) -> Path:
    """Dispatch on ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    if fmt == "state_dict":
        return export_state_dict(model, path)
    if fmt == "torchscript":
        return export_torchscript(model, path, example_input)
    if fmt == "onnx":
        return export_onnx(model, path, example_input)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")

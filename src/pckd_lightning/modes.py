"""Running a module in eval mode for a while, then giving every submodule its own train/eval flag back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the ``with`` block; restore every submodule's own mode on exit.

    Each submodule's ``training`` flag (``module`` included) is recorded on entry and written back on
    exit, even when the block raises, so a mix of modes (a frozen teacher in eval inside a training
    module, say) comes back exactly as it was, whatever the block switched. The block may put some
    submodules back in train mode (``m.train()``). Yields ``module``.
    """
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, mode in modes:
            m.training = mode

"""The run's resolved config inside every checkpoint, so that a resume can tell what the checkpoint fixes."""

from __future__ import annotations

import hashlib
from typing import Any

import lightning as L

#: where the record lives in a Lightning checkpoint: checkpoint["callbacks"][STATE_KEY]
STATE_KEY = "RunConfigRecord"


def config_sha256(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


class RunConfigRecord(L.Callback):
    """Stores ``config`` (the resolved run config), the SHA-256 of its ``config.yaml`` text and ``segments``:
    one entry per training segment, the first run and each resume (its code version; a resume's checkpoint,
    epochs and accepted changes), so that a later resume, which compares only with the segment before it,
    does not erase what an earlier one changed.

    Nothing is restored from it: :mod:`pckd_lightning.resume` reads it before the run is built, and
    ``pckd-report`` checks that a folder's checkpoint and ``config.yaml`` belong to the same run.
    """

    def __init__(self, config: dict[str, Any], config_yaml: str, segments: list[dict[str, Any]]) -> None:
        self.config = config
        self.sha256 = config_sha256(config_yaml)
        self.segments = segments

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "sha256": self.sha256, "segments": self.segments}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The resumed run records its own config (checked against this one by the runner)."""

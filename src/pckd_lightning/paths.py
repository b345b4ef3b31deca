"""Where the library's Hydra configs live (the repository's ``conf/``, or ``$PCKD_CONFIG_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("PCKD_CONFIG_DIR", Path(__file__).resolve().parents[2] / "conf"))

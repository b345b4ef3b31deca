"""``python -m pckd_lightning.report FOLDER`` is ``pckd-report FOLDER``."""

import sys

from pckd_lightning.report.cli import main

sys.exit(main())

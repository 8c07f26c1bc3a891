"""A method for the resume test: once its cell's folder is being written (after training and
evaluation, before the metrics that mark it complete), it marks that and sleeps (killed there)."""

import os
import time
from pathlib import Path

from baselines.mostpop import MostPop
from benchmarks.registry import METHODS


class Sleepy(MostPop):
    """MostPop that sleeps $GENREC_TEST_SLEEP seconds while its cell is written (0 by default)."""

    def write_artefacts(self, cell) -> None:
        marker = os.environ.get("GENREC_TEST_MARKER")
        if marker:
            Path(marker).write_text("writing the cell")
        time.sleep(float(os.environ.get("GENREC_TEST_SLEEP", "0")))
        super().write_artefacts(cell)


if "sleepy" not in METHODS:
    METHODS.add("sleepy", Sleepy, origin=__name__)

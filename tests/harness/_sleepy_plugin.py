"""A method for the resume test: it marks that its fit started, then sleeps (killed there)."""

import os
import time
from pathlib import Path

from baselines.mostpop import MostPop
from benchmarks.registry import METHODS


class Sleepy(MostPop):
    """MostPop that sleeps $GENREC_TEST_SLEEP seconds in fit (0 by default)."""

    def fit(self, validator=None):
        marker = os.environ.get("GENREC_TEST_MARKER")
        if marker:
            Path(marker).write_text("fit started")
        time.sleep(float(os.environ.get("GENREC_TEST_SLEEP", "0")))
        return super().fit(validator)


if "sleepy" not in METHODS:
    METHODS.add("sleepy", Sleepy, origin=__name__)

"""What every reader returns: interactions in file order plus optional item text.

Readers do no filtering and no splitting: that is :mod:`benchmarks.data.preprocess`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Canonical item text fields. Readers map their format's names onto these
#: (``movie_title`` -> ``title``, ``class``/``genres``/``category`` -> ``categories`` ...);
#: other fields are kept under their own names.
TEXT_FIELDS = ("title", "categories", "brand", "description")


@dataclass
class RawData:
    """Interactions and item text exactly as a reader found them.

    ``interactions``: one row per interaction, in FILE ORDER, with columns
      - ``user`` (str), ``item`` (str): raw ids as written in the files;
      - ``timestamp`` (float64, seconds; NaN where the format carries none: the row order is
        then the only time information). On every row or on none: a reader refuses a row
        without one in a format that has them;
      - optional ``rating`` (float64);
      - optional ``split`` (str: ``train`` / ``valid`` / ``test``) for formats that ship a
        fixed split (SETRec's dicts). Such data are not re-split.
    ``items``: DataFrame indexed by raw item id (str) with text columns (str or None), e.g.
      ``title``, ``categories`` (several joined by ", "), ``brand``, ``description``; or None.
    ``extras``: format-specific extras, e.g. ``warm_items`` / ``cold_items`` (lists of raw ids).
    ``source``: where the data came from (paths or URL), for the record.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    source: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def has_timestamps(self) -> bool:
        """True when every interaction has a finite timestamp (time order applies)."""
        return len(self.interactions) > 0 and self.missing_timestamps() == 0

    def missing_timestamps(self) -> int:
        """How many interactions have no finite timestamp (NaN, inf or no column at all).

        Readers give a timestamp on every row or on none; anything in between is refused by
        :func:`benchmarks.data.preprocess.preprocess`, never turned into file order."""
        ts = self.interactions.get("timestamp")
        if ts is None:
            return len(self.interactions)
        return int((~np.isfinite(ts.to_numpy(dtype=np.float64))).sum())

    @property
    def presplit(self) -> bool:
        return "split" in self.interactions.columns

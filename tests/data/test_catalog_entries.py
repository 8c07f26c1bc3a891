"""Matrix dataset entries: a catalog name, a catalog dataset under another name with other
preprocessing options, and a raw format with its files."""

import pytest

from benchmarks.data.catalog import CATALOG, spec_from_config
from benchmarks.errors import ConfigError


def test_catalog_dataset_under_another_name_keeps_its_source():
    base = spec_from_config("ml-100k")
    spec = spec_from_config({"name": "ml-100k-cold", "catalog": "ml-100k", "split": "ratio",
                             "ratio": [0.8, 0.1, 0.1]})
    assert spec.name == "ml-100k-cold" and spec.format == base.format
    assert spec.reader_args == base.reader_args and spec.locate is base.locate
    assert spec.options.split == "ratio" and spec.options.ratio == (0.8, 0.1, 0.1)
    assert spec.options.k_core == base.options.k_core
    assert "ml-100k-cold" not in CATALOG


def test_unknown_catalog_name_is_one_clear_error():
    with pytest.raises(ConfigError, match="'nope': not in the catalog"):
        spec_from_config({"name": "mine", "catalog": "nope"})
    with pytest.raises(ConfigError, match="'mine': not in the catalog, so it needs a 'format'"):
        spec_from_config({"name": "mine", "split": "loo"})

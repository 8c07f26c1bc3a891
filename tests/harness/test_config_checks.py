"""Every key of a matrix file, at every level, is checked against what it can be, with its
type: one ConfigError naming the entry, the key and the known keys (never a traceback, never
a key silently dropped)."""

import dataclasses
import typing

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.config import build_config
from benchmarks.data.preprocess import PreprocessOptions
from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig
from benchmarks.matrix import expand, parse_matrix


@pytest.fixture
def toy(tmp_path):
    return write_toy_recbole(tmp_path / "data")


def _parse(datasets, methods=("mostpop",), **extra):
    return parse_matrix({"name": "t", "datasets": list(datasets), "methods": list(methods), **extra},
                        "m.yaml")


# --------------------------------------------------------------------------- datasets
DATASET_CASES = [
    ({"kcore": 5}, r"m\.yaml: datasets\[0\]: dataset 'toy': unknown key\(s\) kcore; known: cf_embeddings, "
                   r"dedupe, format, k_core, max_history, min_rating, name, path, ratio, split, stem"),
    ({"k_core": "five"}, r"datasets\[0\]: dataset 'toy': PreprocessOptions: field 'k_core': expected an "
                         r"integer, got 'five' \(str\)"),
    ({"k_core": True}, r"field 'k_core': expected an integer, got True \(bool\)"),
    ({"ratio": [0.5, 0.5]}, r"field 'ratio': expected a list of 3 numbers, got \[0\.5, 0\.5\]"),
    ({"split": ["loo"]}, r"field 'split': expected one of 'loo', 'ratio', 'fixed', got \['loo'\] \(list\)"),
    ({"dedupe": True}, r"field 'dedupe': expected one of 'exact', 'user-item', 'none', got True \(bool\)"),
    ({"min_rating": "4"}, r"field 'min_rating': expected a number or null, got '4' \(str\)"),
    ({"path": 3}, r"dataset 'toy': field 'path': expected a path \(a string\), got 3 \(int\)"),
    ({"cf_embeddings": ["a.npy"]}, r"field 'cf_embeddings': expected a string or null"),
    ({"catalog": "ml-100k"}, r"dataset 'toy': give 'format' \(files of your own\) or 'catalog' "
                             r"\(a catalog dataset under another name\), not both"),
]


@pytest.mark.parametrize("change,match", DATASET_CASES)
def test_every_key_of_a_format_dataset_is_checked(toy, change, match):
    with pytest.raises(ConfigError, match=match):
        _parse([{**toy, **change}])


@pytest.mark.parametrize("entry,match", [
    ({"name": "ml-cold", "catalog": "ml-100k", "splitt": "ratio"},
     r"m\.yaml: datasets\[0\]: dataset 'ml-cold': unknown key\(s\) splitt; known: catalog, cf_embeddings, "
     r"dedupe, k_core, max_history, min_rating, name, ratio, split$"),
    ({"name": "ml-100k", "path": "/data/ml-100k"}, r"dataset 'ml-100k': unknown key\(s\) path; known: catalog"),
    ({"name": "ml-cold", "catalog": "ml-100k", "split": 3}, r"field 'split': expected one of 'loo', 'ratio', "
                                                            r"'fixed', got 3 \(int\)"),
    ({"name": "ml-cold", "catalog": "ml-1000k"}, r"dataset 'ml-1000k': not in the catalog"),
    ({"name": "mine", "format": "recbole"}, r"dataset 'mine': format 'recbole' needs 'path'"),
    ({"name": "mine", "format": "letter-json", "path": "/x"}, r"dataset 'mine': format 'letter-json' needs 'stem'"),
    ({"name": "mine", "format": "amazon2014", "reviews": "r.json", "stem": "x"},
     r"unknown key\(s\) stem; known: cf_embeddings, dedupe, format, k_core, max_history, meta, min_rating"),
    ({"name": "mine", "format": "csv", "path": "/x"}, r"datasets\[0\]: unknown format 'csv'; known: amazon2014"),
    ({"name": 3}, r"datasets\[0\]: dataset entry: expected a catalog name or a mapping with a 'name' \(a string\)"),
])
def test_every_key_of_a_catalog_or_format_entry_is_checked(entry, match):
    with pytest.raises(ConfigError, match=match):
        _parse([entry])


def test_dataset_names_are_unique(toy):
    with pytest.raises(ConfigError, match=r"m\.yaml: datasets: names must be unique, repeated: \['toy'\]"):
        _parse([toy, {**toy, "k_core": 3}])


# --------------------------------------------------------------------------- the matrix and its methods
@pytest.mark.parametrize("extra,match", [
    ({"evaluation": {"ks": "five"}}, r"m\.yaml: evaluation: EvalConfig: field 'ks': expected a list of "
                                     r"integers, got 'five' \(str\)"),
    ({"evaluation": {"mask_histroy": True}}, r"m\.yaml: evaluation: EvalConfig: unknown field\(s\) mask_histroy"),
    ({"evaluation": {"global_ranking": "yes"}}, r"field 'global_ranking': expected true or false, got 'yes'"),
    ({"device": 0}, r"m\.yaml: device: expected a string, got 0 \(int\)"),
    ({"precision": "fp8"}, r"m\.yaml: precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp8'"),
    ({"name": ["q"]}, r"m\.yaml: name: expected a string, got \['q'\] \(list\)"),
    ({"features": {"text_template": 3}}, r"m\.yaml: features\.text_template: expected a string, got 3"),
    ({"methods": [{"name": "mf", "label": 3}]}, r"m\.yaml: methods\[0\]\.label: expected a string, got 3"),
    ({"methods": [{"name": "mf", "datasets": {"tyo": {"epochs": 2}}}]},
     r"m\.yaml: methods\[0\]\.datasets: unknown dataset\(s\) tyo; this matrix's datasets: toy"),
    ({"methods": [{"name": "mf", "datasets": {"toy": 2}}]},
     r"m\.yaml: methods\[0\]\.datasets\.toy: expected a mapping of config overrides, got 2"),
    ({"methods": [{"name": "mf", "only": "toy"}]}, r"methods\[0\]\.only: expected a list"),
])
def test_matrix_level_keys_and_types_are_checked(toy, extra, match):
    with pytest.raises(ConfigError, match=match):
        parse_matrix({"name": "t", "datasets": [toy], "methods": ["mostpop"], **extra}, "m.yaml")


@pytest.mark.parametrize("method,match", [
    ({"name": "mf", "config": {"epochs": "three"}},
     r"^m\.yaml: method 'mf': MFConfig: field 'epochs': expected an integer, got 'three' \(str\)$"),
    ({"name": "sasrec", "label": "s", "config": {"dropout": "high"}},
     r"method 's': SASRecConfig: field 'dropout': expected a number, got 'high'"),
    ({"name": "mf", "config": {"grad_clip": [1]}}, r"field 'grad_clip': expected a number or null, got \[1\]"),
    ({"name": "mf", "datasets": {"toy": {"epochs": 2.5}}}, r"method 'mf': MFConfig: field 'epochs': expected an integer"),
    ({"name": "tiger", "config": {"backbone_config": {"d_modle": 8}}},
     r"TIGERConfig: field 'backbone_config': T5BackboneConfig: unknown field\(s\) d_modle; known: checkpoint"),
    ({"name": "lcrec", "config": {"backbone_config": {"lora": "sometimes"}}},
     r"LCRecConfig: field 'backbone_config': CausalBackboneConfig: field 'lora': expected true or false or "
     r"'auto', got 'sometimes'"),
    ({"name": "tiger", "config": {"identifier_config": {"epochs": "many"}}},
     r"TIGERConfig: field 'identifier_config': TigerConfig: field 'epochs': expected an integer"),
    ({"name": "generative", "config": {"identifier": "tigr"}},
     r"GenerativeConfig: field 'identifier': unknown identifier 'tigr'; known: "),
    ({"name": "generative", "config": {"backbone": "gpt"}},
     r"GenerativeConfig: field 'backbone': unknown backbone 'gpt'; known: causal, t5"),
    ({"name": "generative", "config": {"identifier": "letter", "identifier_config": {"cf_sasrec": {"hiden": 8}}}},
     r"field 'identifier_config': LetterConfig: field 'cf_sasrec': SASRecConfig: unknown field\(s\) hiden"),
    ({"name": "setrec-t5", "config": {"cf_sasrec_config": {"n_layers": "2"}}},
     r"SETRecConfig: field 'cf_sasrec_config': SASRecConfig: field 'n_layers': expected an integer"),
    ({"name": "setrec-causal", "config": {"backbone_config": {"d_model": 8}}},
     r"SETRecCausalConfig: field 'backbone_config': CausalBackboneConfig: unknown field\(s\) d_model"),
])
def test_method_configs_are_type_checked_with_their_nested_configs(toy, method, match):
    with pytest.raises(ConfigError, match=match):
        expand(_parse([toy], [method]))


@pytest.mark.parametrize("method", ["tiger", "setrec-t5"])
def test_a_method_history_longer_than_the_datasets_cap_is_an_error(toy, method):
    """max_history has one owner, the dataset: a method may read fewer recent items than the
    dataset's cap, never more (it would train on longer histories than it is ranked on)."""
    entry = {**toy, "max_history": 8}
    cells = expand(_parse([entry], [{"name": method, "config": {"max_history": 8}}]))
    assert cells[0].resolved["config"]["max_history"] == 8
    with pytest.raises(ConfigError, match=r"method '[a-z0-9-]+': \w+Config: field 'max_history': expected 1 \.\. 8 "
                                          r"\(the dataset's history cap, its max_history\), got 9"):
        expand(_parse([entry], [{"name": method, "config": {"max_history": 9}}]))


def test_a_method_history_is_checked_when_the_method_is_built():
    from benchmarks.context import build_context
    from benchmarks.data.toy import toy_dataset
    from benchmarks.registry import METHODS

    ds = toy_dataset(max_history=4)
    cls = METHODS.get("p5-id")
    with pytest.raises(ConfigError, match="P5IDConfig: field 'max_history': expected 1 .. 4"):
        cls(build_config(cls.Config, {**cls.smoke_config, "max_history": 5}), build_context(ds, progress=False))


def test_a_wrong_type_in_a_method_config_is_one_line_from_the_cli(tmp_path, capsys, toy):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "t", "datasets": [toy], "methods": [
        {"name": "mf", "config": {"epochs": "three"}}]}))
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {matrix}: method 'mf': MFConfig: field 'epochs': expected an integer, got 'three' (str)"


# --------------------------------------------------------------------------- the checker, generically
def _config_classes():
    from backbones.causal import CausalBackboneConfig
    from backbones.t5 import T5BackboneConfig
    from benchmarks.registry import IDENTIFIERS, METHODS

    classes = [METHODS.get(n).Config for n in METHODS.names()]
    classes += [IDENTIFIERS.get(n).Config for n in IDENTIFIERS.names()]
    classes += [T5BackboneConfig, CausalBackboneConfig, EvalConfig, PreprocessOptions]
    return sorted({c for c in classes if dataclasses.fields(c)}, key=lambda c: (c.__module__, c.__qualname__))


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_field_of_every_config_is_type_checked(cls):
    """Driven by the field annotations: each field takes its own default back, and refuses a
    value of a wrong kind (a mapping for a scalar or a sequence, a string for a mapping)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        build_config(cls, {f.name: _default(f)})
        wrong = "not a mapping" if "dict" in repr(hints[f.name]) else {"a": 1}
        with pytest.raises(ConfigError, match=rf"{cls.__qualname__}: field '{f.name}': expected "):
            build_config(cls, {f.name: wrong})


def test_the_checker_accepts_ints_for_floats_and_lists_for_tuples():
    cfg = build_config(EvalConfig, {"ks": [1, 2], "popularity_edges": [0, 0.5]})
    assert cfg.ks == (1, 2) and cfg.popularity_edges == (0, 0.5)
    opts = build_config(PreprocessOptions, {"ratio": [1, 0, 0], "min_rating": 4})
    assert opts.ratio == (1.0, 0.0, 0.0) and opts.min_rating == 4
    with pytest.raises(ConfigError, match=r"field 'ks': expected a list of integers, got \[5, 'ten'\]"):
        build_config(EvalConfig, {"ks": [5, "ten"]})

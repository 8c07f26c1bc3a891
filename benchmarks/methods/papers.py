"""The generative methods of the papers: ONE table, method name -> the defaults it sets.

Every row is a :class:`~benchmarks.methods.generative.GenerativeRecommender` with some
:class:`~benchmarks.methods.generative.GenerativeConfig` defaults changed to its paper's:

| method | identifier | backbone | decoding | paper defaults |
|---|---|---|---|---|
| ``generative`` | any (config) | any (config) | trie beam search | none: the scheme and the backbone are chosen by config |
| ``tiger`` | tiger (RQ-VAE 3x256 + 1) | T5 | trie beam search | hashed user token (2000), τ = 1 |
| ``letter-tiger`` | letter | T5 | trie beam search | τ = 0.7 |
| ``lcrec`` | lcrec (RQ-VAE 4x256, Sinkhorn) | causal LM (+LoRA) | trie beam search | LC-Rec task mix, prompts |
| ``letter-lcrec`` | letter | causal LM (+LoRA) | trie beam search | task mix, τ = 0.7 |
| ``p5-id`` | id (digits) | T5 | trie beam search | sequential indexing |
| ``p5-cid`` | p5-cid | T5 | trie beam search | 20 clusters, leaves <= 500 |
| ``p5-tid`` | textual (titles) | T5 | trie beam search over title tokens | |
| ``bigrec`` | textual (titles) | causal LM | free generation, grounded by L2 in text-embedding space | |

Each row registers its method under its name (``genrec-bench plugins`` lists them) with a Config
dataclass generated from the row (``TIGERConfig``, ``LCRecConfig`` ...: GenerativeConfig with
the row's defaults, the class a matrix entry's config is checked against and errors name) and a
smoke config (a seconds-long run: the backbone's and the identifier scheme's smoke sizes, plus
the row's ``smoke``). A new combination of a scheme and a backbone with its own defaults is one
row here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from benchmarks.methods.generative import GenerativeConfig, GenerativeRecommender
from benchmarks.registry import BACKBONES, IDENTIFIERS, register_method

LCREC_TASKS = ("seq", "item2index", "index2item", "seq2title")


@dataclass(frozen=True)
class Paper:
    """A row: the method's class name (its Config is ``<name>Config``), its one-line
    description, the GenerativeConfig defaults it changes, and smoke overrides of its own."""

    name: str
    doc: str
    defaults: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)


PAPERS: dict[str, Paper] = {
    "generative": Paper("Generative", "Any identifier scheme on either backbone, chosen by config (identifier, backbone).",
                        smoke={"identifier": "id"}),
    "tiger": Paper("TIGER", "TIGER (Rajput et al., NeurIPS 2023): RQ-VAE semantic ids on a T5 from scratch.",
                   {"identifier": "tiger", "user_tokens": 2000}, smoke={"user_tokens": 8}),
    "letter-tiger": Paper("LetterTIGER", "LETTER-TIGER (Wang et al., CIKM 2024): LETTER's ids on TIGER, "
                          "ranking-guided loss τ=0.7.",
                          {"identifier": "letter", "user_tokens": 2000, "temperature": 0.7}, smoke={"user_tokens": 8}),
    "lcrec": Paper("LCRec", "LC-Rec (Zheng et al., ICDE 2024): Sinkhorn RQ-VAE ids on a causal LM, task mix.",
                   {"identifier": "lcrec", "backbone": "causal", "prompt": True, "tasks": LCREC_TASKS, "lr": 1e-4},
                   smoke={"lr": 1e-3}),
    "letter-lcrec": Paper("LetterLCRec", "LETTER-LC-Rec (Wang et al., CIKM 2024): LETTER's ids on LC-Rec, τ=0.7.",
                          {"identifier": "letter", "backbone": "causal", "prompt": True, "tasks": LCREC_TASKS,
                           "lr": 1e-4, "temperature": 0.7}, smoke={"lr": 1e-3}),
    "p5-id": Paper("P5ID", "P5 ID identifiers (Hua et al., SIGIR-AP 2023): item numbers as digit tokens, on T5.",
                   {"identifier": "id"}),
    "p5-cid": Paper("P5CID", "P5-CID (Hua et al., SIGIR-AP 2023): spectral co-occurrence clustering ids, on T5.",
                    {"identifier": "p5-cid"}),
    "p5-tid": Paper("P5TID", "P5-TID (Hua et al., SIGIR-AP 2023): titles as ids, trie beam search over title tokens.",
                    {"identifier": "textual"}, smoke={"max_title_tokens": 8}),
    "bigrec": Paper("BIGRec", "BIGRec (Bao et al., 2023): generate a title freely, ground it to items by L2 distance.",
                    {"identifier": "textual", "backbone": "causal", "decoding": "free-grounded", "lr": 1e-4},
                    smoke={"lr": 1e-3, "max_title_tokens": 8}),
}


def config_class(paper: Paper) -> type:
    """GenerativeConfig with the row's defaults, as a dataclass of its own (``<name>Config``);
    GenerativeConfig itself for a row without defaults."""
    if not paper.defaults:
        return GenerativeConfig
    hints = typing.get_type_hints(GenerativeConfig)
    cls = dataclasses.make_dataclass(f"{paper.name}Config",
                                     [(k, hints[k], field(default=v)) for k, v in paper.defaults.items()],
                                     bases=(GenerativeConfig,))
    cls.__module__ = __name__
    cls.__doc__ = f"GenerativeConfig with {paper.name}'s defaults: {paper.defaults}."
    return cls


def smoke_config(paper: Paper) -> dict:
    """A seconds-long configuration: a tiny backbone, the identifier scheme's own smoke config,
    two epochs, ten beams, each user's last three prefixes, then the row's ``smoke``."""
    chosen = {**dataclasses.asdict(GenerativeConfig()), **paper.defaults, **paper.smoke}
    return {"epochs": 2, "beams": 10, "train_last_n": 3,
            "backbone_config": dict(BACKBONES.get(chosen["backbone"]).smoke_config),
            "identifier_config": dict(IDENTIFIERS.get(chosen["identifier"]).smoke_config), **paper.smoke}


def _register(method: str, paper: Paper) -> type:
    cfg = config_class(paper)
    cls = type(paper.name, (GenerativeRecommender,), {
        "__doc__": paper.doc, "__module__": __name__, "__qualname__": paper.name,
        "Config": cfg, "smoke_config": smoke_config(paper)})
    register_method(method)(cls)
    globals()[paper.name] = cls            # importable by name (pickling, Ray workers)
    globals()[cfg.__name__] = cfg
    return cls


for _method, _paper in PAPERS.items():
    _register(_method, _paper)

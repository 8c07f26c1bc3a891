"""What an identifier scheme is and what it produces.

A scheme turns every item of a dataset into a sequence of tokens, deterministically under a
seed. Two kinds:

- ``codes``: tokens from the scheme's OWN vocabulary (``ItemIdentifiers.vocab``), e.g. TIGER's
  ``<a_12> <b_200> <c_7> <d_0>`` or P5's digit tokens. Codebook schemes have LEVELS, each with
  its own token range (``ItemIdentifiers.levels``).
- ``text``: natural-language text (a title) that the BACKBONE's text tokenizer turns into tokens
  (BIGRec, P5-TID); ``vocab`` is empty and each item's tokens are one string.

Backbones never import this package: the harness maps tokens to the backbone's token ids and
hands the backbone ids, vocabulary sizes and tries.

A scheme is one module under ``identifiers/`` with one class registered by name (the registry,
:data:`benchmarks.registry.IDENTIFIERS`, lives beside the method and backbone registries)::

    from benchmarks.registry import register_identifier

    @register_identifier("my-scheme")
    class MyScheme(IdentifierScheme):
        kind = "codes"
        Config = MyConfig            # dataclass; the paper's defaults
        needs = frozenset({"text"})  # what it reads from the FeatureStore: "text", "cf"

        def build(self) -> ItemIdentifiers: ...

``build()`` may train (RQ-VAE ...); ``load_or_build`` caches its result beside the dataset,
keyed by the dataset, the scheme, its config and the seed.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from benchmarks.registry import IDENTIFIERS
from benchmarks.utils import atomic_write_bytes, atomic_write_json, stable_hash

if TYPE_CHECKING:
    from benchmarks.data.dataset import Dataset
    from benchmarks.features import FeatureStore

log = logging.getLogger(__name__)

#: bump when the stored format or a built-in scheme's output changes (part of the cache key).
#: 2: rq-kmeans keeps unit-norm centres for normalised residuals (spherical k-means);
#: 3: RQ-VAE codes (tiger, lcrec, letter) from the deterministic code-vector lookup
#:    (F.embedding): those cached by the racy indexing backward are not reused
IDENTIFIER_VERSION = 3


@dataclass
class ItemIdentifiers:
    """Every item's token sequence, and what the analyses need to read it.

    - ``tokens[i - 1]``: item i's tokens (tuple of str); for ``kind == "text"`` one string.
    - ``vocab``: the scheme's own tokens in a fixed order (empty for ``text``).
    - ``levels``: for level-structured schemes, the token range of each level (a list of token
      lists, level 0 first); None otherwise.
    - ``n_semantic_levels``: how many leading levels carry meaning; the rest only disambiguate
      (TIGER's 4th token). Collision rates are measured over the semantic levels.
    - ``stats``: scalars the scheme reports (losses, epochs, duplicate titles ...).
    - ``arrays``: optional arrays for analyses, e.g. ``quantized`` [n_items + 1, d] (the
      quantised item embeddings, LETTER Table 3) or ``codebook_0`` [N, d].
    - ``ties``: False (every scheme's default): identifiers are unique. True: items may share
      one (a scheme's "ties" collision policy); a decoder that generates a shared identifier
      returns all of its items, tied.
    """

    scheme: str
    kind: str
    tokens: list[tuple[str, ...]]
    vocab: list[str] = field(default_factory=list)
    levels: list[list[str]] | None = None
    n_semantic_levels: int | None = None
    stats: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ties: bool = False

    def __post_init__(self):
        if self.kind not in ("codes", "text"):
            raise ValueError(f"kind must be 'codes' or 'text', got {self.kind!r}")
        self.tokens = [tuple(t) for t in self.tokens]

    @property
    def n_items(self) -> int:
        return len(self.tokens)

    def code_matrix(self) -> np.ndarray:
        """Level-structured schemes: int64 [n_items, L] index of each item's token WITHIN its
        level (e.g. <b_70> -> 70 at level 1); -1 where an item's sequence is shorter."""
        if self.levels is None:
            raise ValueError(f"{self.scheme}: identifiers without levels have no code matrix")
        index = [{tok: j for j, tok in enumerate(level)} for level in self.levels]
        out = -np.ones((self.n_items, len(self.levels)), dtype=np.int64)
        for i, toks in enumerate(self.tokens):
            for lvl, tok in enumerate(toks[:len(self.levels)]):
                out[i, lvl] = index[lvl][tok]
        return out

    def check_unique(self) -> None:
        """Raise ValueError if two items share a token sequence (identifiers must be unique)."""
        seen: dict[tuple[str, ...], int] = {}
        for i, toks in enumerate(self.tokens, start=1):
            if toks in seen:
                raise ValueError(f"{self.scheme}: items {seen[toks]} and {i} share the identifier {toks}")
            seen[toks] = i

    # ------------------------------------------------------------------ storage
    def save(self, directory: Path, item_ids: list[str]) -> None:
        """``index.json`` (raw item id -> tokens, LETTER's format), ``meta.json``, ``arrays.npz``."""
        directory = Path(directory)
        if self.arrays:
            import io
            buf = io.BytesIO()
            np.savez_compressed(buf, **self.arrays)
            atomic_write_bytes(directory / "arrays.npz", buf.getvalue())
        atomic_write_json(directory / "index.json", {rid: list(t) for rid, t in zip(item_ids, self.tokens)})
        # meta.json last: its presence marks a complete folder
        atomic_write_json(directory / "meta.json", {
            "scheme": self.scheme, "kind": self.kind, "vocab": self.vocab, "levels": self.levels,
            "n_semantic_levels": self.n_semantic_levels, "stats": self.stats, "ties": self.ties})

    @staticmethod
    def saved_in(directory: Path) -> bool:
        """Whether ``directory`` holds a complete :meth:`save` (its last file is there)."""
        return (Path(directory) / "meta.json").is_file()

    @classmethod
    def load(cls, directory: Path, item_ids: list[str] | None = None) -> "ItemIdentifiers":
        """What :meth:`save` wrote; ``item_ids``: the raw ids in the dataset's item order
        (default: the saved index's order, raw ids sorted)."""
        directory = Path(directory)
        index = json.loads((directory / "index.json").read_text())
        meta = json.loads((directory / "meta.json").read_text())
        item_ids = list(index) if item_ids is None else item_ids
        arrays = {}
        if (directory / "arrays.npz").is_file():
            with np.load(directory / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        return cls(scheme=meta["scheme"], kind=meta["kind"], tokens=[tuple(index[r]) for r in item_ids],
                   vocab=meta["vocab"], levels=meta["levels"], n_semantic_levels=meta["n_semantic_levels"],
                   stats=meta["stats"], arrays=arrays, ties=bool(meta.get("ties", False)))


class IdentifierScheme(abc.ABC):
    """Base class of every identifier scheme (see the module docstring)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "codes"
    #: the row group in the report: "id", "textual", "codebook" (or "set")
    family: ClassVar[str] = "codebook"
    Config: ClassVar[type]
    #: what ``build`` reads from the FeatureStore ("text" embeddings, "cf" embeddings); "text"
    #: makes the scheme content-based by default (:meth:`reads_item_content`)
    needs: ClassVar[frozenset[str]] = frozenset()
    #: config overrides for a seconds-long build on the toy dataset (tests)
    smoke_config: ClassVar[dict] = {}
    #: True where every item's identifier is derived from its content (text, categories), so
    #: an item no training interaction contains (cold) still gets a meaningful identifier;
    #: by default, schemes that read item text embeddings
    content_based: ClassVar[bool | None] = None
    #: True where ``build`` trains on the cell's device (:attr:`device`): a GPU's identifiers
    #: then have a cache entry of their own (float results differ by device); CPU keys unchanged
    trains_on_device: ClassVar[bool] = False

    @classmethod
    def reads_item_content(cls) -> bool:
        return cls.content_based if cls.content_based is not None else "text" in cls.needs

    def __init__(self, config: Any, dataset: "Dataset", features: "FeatureStore | None" = None,
                 seed: int = 0, progress: bool = True):
        self.config = config
        self.dataset = dataset
        self.features = features
        self.seed = seed
        self.progress = progress
        #: where a scheme that trains for long may keep its resumable training state (set by
        #: ``load_or_build`` beside the cache entry; removed once the identifiers are saved)
        self.checkpoint: Path | None = None

    @property
    def device(self) -> str:
        """The cell's device (the FeatureStore's; the CPU without one)."""
        return str(getattr(self.features, "device", None) or "cpu")

    def prepare(self) -> None:
        """Work that every process of a data-parallel launch does together before ``build``
        (features trained through the shared training loop, e.g. CF embeddings); default none."""

    @abc.abstractmethod
    def build(self) -> ItemIdentifiers:
        """Compute (train, if the scheme learns) every item's identifier."""

    def snapshot(self) -> ItemIdentifiers:
        """The identifiers as ``self.checkpoint`` (a long training run's saved state) stands,
        without training: only schemes that keep such a checkpoint have one."""
        raise ValueError(f"identifier scheme {self.name!r} keeps no training checkpoint to read "
                         f"(the codebook schemes do: tiger, lcrec, letter ...)")


def identifier_cache_dir(scheme: str, config: Any, dataset: "Dataset", seed: int, root: Path,
                         device: str | None = None) -> Path:
    """The cache entry of a build; ``device``: where a ``trains_on_device`` scheme trains, in the
    key by its kind unless that is the CPU (so the CPU's entries keep their keys)."""
    fields = {"scheme": scheme, "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
              "seed": seed, "dataset": dataset.info.get("cache_key") or dataset.name,
              "version": IDENTIFIER_VERSION}
    kind = str(device).split(":")[0] if device else "cpu"
    if kind != "cpu":
        fields["device"] = kind
    key = stable_hash(fields)
    return Path(root) / "identifiers" / f"{dataset.name}-{dataset.info.get('cache_key', 'nokey')}" / f"{scheme}-{key}"


def checkpoint_path(target: Path) -> Path:
    """Where a build whose cache entry is ``target`` keeps its resumable training state."""
    return target.with_name(target.name + ".checkpoint.pt")


def snapshot_identifiers(name: str, config: Any, dataset: "Dataset", features: "FeatureStore | None",
                         seed: int, cache_root: Path, progress: bool = True) -> ItemIdentifiers:
    """Scheme ``name``'s identifiers as its unfinished training run's checkpoint (the one
    :func:`load_or_build` keeps beside the cache entry) stands, without training; nothing is
    cached (the run resumes from the same checkpoint later)."""
    cls = IDENTIFIERS.get(name)
    scheme = cls(config, dataset, features, seed, progress)
    target = identifier_cache_dir(name, config, dataset, seed, cache_root,
                                  scheme.device if cls.trains_on_device else None)
    scheme.checkpoint = checkpoint_path(target)
    scheme.prepare()
    ids = scheme.snapshot()
    if len(ids.tokens) != dataset.n_items:
        raise ValueError(f"{name}: built {len(ids.tokens)} identifiers for {dataset.n_items} items")
    return ids


def load_or_build(name: str, config: Any, dataset: "Dataset", features: "FeatureStore | None",
                  seed: int, cache_root: Path | None, progress: bool = True) -> ItemIdentifiers:
    """Build scheme ``name`` (or reuse the cached result for the same dataset, config, seed).
    Under a multi-process launch the main process builds first, the others read its cache."""
    from benchmarks.cache import build_lock
    from benchmarks.distributed import main_first

    cls = IDENTIFIERS.get(name)
    scheme = cls(config, dataset, features, seed, progress)
    target = (identifier_cache_dir(name, config, dataset, seed, cache_root,
                                   scheme.device if cls.trains_on_device else None) if cache_root else None)
    if target is not None:
        scheme.checkpoint = checkpoint_path(target)
    if target is None or not ItemIdentifiers.saved_in(target):
        scheme.prepare()
    # the lock inside main_first (the main process builds first, and a waiting rank must not
    # hold the lock at the barrier); across processes sharing the cache, the first builds
    with main_first(), (build_lock(target) if target is not None else nullcontext()):
        return _load_or_build(scheme, name, dataset, target)


def _load_or_build(scheme: IdentifierScheme, name: str, dataset, target) -> ItemIdentifiers:
    if target is not None and ItemIdentifiers.saved_in(target):
        log.info("identifiers %s: cached %s", name, target)
        return ItemIdentifiers.load(target, dataset.item_ids)
    ids = scheme.build()
    if len(ids.tokens) != dataset.n_items:
        raise ValueError(f"{name}: built {len(ids.tokens)} identifiers for {dataset.n_items} items")
    if not ids.ties:
        ids.check_unique()
    if target is not None:
        ids.save(target, dataset.item_ids)
        if scheme.checkpoint is not None:
            scheme.checkpoint.unlink(missing_ok=True)
    return ids

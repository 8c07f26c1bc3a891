"""Decoding: trie-constrained beam search, exact global ranking, and a reference generate().

:func:`beam_search` — constrained beam search over a :class:`backbones.trie.Trie`: at every
step the valid-next-token masks of all B x beams rows come from the trie in one tensor op,
the backbone's key/value cache is reused (reordered as beams move), finished beams (a leaf:
a complete item) stay in the race with their score frozen, and the result is the top-k
DISTINCT items per input, best first, scored by their exact sequence log-probability (no
length normalisation: the same score global ranking uses).

:func:`global_scores` — exact global ranking: the teacher-forced log-probability of EVERY item
(or a candidate subset) for every input, in chunks (LETTER Fig. 3's "global search", SETRec's
local-optima argument). With beams >= the number of items beam search keeps every prefix and
returns exactly the global top-k (a test checks it).

:func:`hf_constrained_generate` — the same search done the way the authors' code does it:
transformers ``generate`` with ``prefix_allowed_tokens_fn`` (a Python callback per beam per
step). Used by the speed benchmark and as a cross-check.
"""

from __future__ import annotations

import torch

from backbones.base import GenerativeBackbone
from backbones.trie import Trie

NEG_INF = float("-inf")


@torch.no_grad()
def beam_search(backbone: GenerativeBackbone, inputs: torch.Tensor, input_mask: torch.Tensor,
                trie: Trie, beams: int, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items [B, k] (0 where fewer exist) and their log-probabilities [B, k]."""
    k = beams if k is None else k
    if k > beams:
        raise ValueError(f"top-{k} needs at least {k} beams, got {beams}")
    b = inputs.shape[0]
    dev = inputs.device
    state = backbone.begin(inputs, input_mask, beams)
    nodes = torch.zeros(b * beams, dtype=torch.long, device=dev)           # all at the root
    scores = torch.full((b, beams), NEG_INF, device=dev)
    scores[:, 0] = 0.0                                                     # one live beam at start
    tokens = None
    base = (torch.arange(b, device=dev) * beams).unsqueeze(1)
    for _ in range(trie.max_len):
        live = scores.view(-1) > NEG_INF
        done = live & trie.is_leaf(nodes.clamp(min=0))
        if bool((done | ~live).all()):
            break
        logits = backbone.step(state, tokens)
        logp = torch.log_softmax(logits.float(), dim=-1)
        allowed = trie.allowed(torch.where(live & ~done, nodes, torch.zeros_like(nodes)))
        allowed &= (live & ~done).unsqueeze(1)
        logp = logp.masked_fill(~allowed, NEG_INF)
        # a finished beam continues only by padding, at no cost: its score stays as it is
        logp[done] = NEG_INF
        logp[done, backbone.pad_id] = 0.0
        cand = (scores.view(-1, 1) + logp).view(b, -1)                    # [B, beams * V]
        top, idx = cand.topk(beams, dim=1)
        src = (base + idx // logp.shape[1]).view(-1)
        tok = (idx % logp.shape[1]).view(-1)
        backbone.reorder(state, src)
        prev_nodes, prev_done = nodes[src], done[src]
        alive = top.view(-1) > NEG_INF
        step_nodes = trie.advance(prev_nodes.clamp(min=0), tok)
        nodes = torch.where(prev_done, prev_nodes, torch.where(alive, step_nodes, torch.full_like(nodes, -1)))
        tokens = torch.where(prev_done | ~alive, torch.full_like(tok, backbone.pad_id), tok)
        scores = top
    items = trie.leaf_item[nodes.clamp(min=0)].view(b, beams)
    items = torch.where(scores > NEG_INF, items, torch.zeros_like(items))
    scores = torch.where(items > 0, scores, torch.full_like(scores, NEG_INF))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return items.gather(1, order)[:, :k], scores.gather(1, order)[:, :k]


@torch.no_grad()
def global_scores(backbone: GenerativeBackbone, inputs: torch.Tensor, input_mask: torch.Tensor,
                  item_tokens: torch.Tensor, n_items: int, chunk_pairs: int = 8192,
                  items: torch.Tensor | None = None) -> torch.Tensor:
    """[B, n_items + 1] exact log p(item | input) for every item (column 0 = -inf).

    ``item_tokens``: [n_items + 1, L] token ids (row 0 unused); ``items``: optional subset of
    item ids to score (others stay -inf). Pairs are scored ``chunk_pairs`` at a time."""
    b = inputs.shape[0]
    out = torch.full((b, n_items + 1), NEG_INF, device=inputs.device)
    ids = torch.arange(1, n_items + 1, device=inputs.device) if items is None else items.to(inputs.device)
    per = max(1, chunk_pairs // max(b, 1))
    for start in range(0, len(ids), per):
        chunk = ids[start:start + per]
        cand = item_tokens[chunk]
        width = int((cand != backbone.pad_id).sum(1).max())
        out[:, chunk] = backbone.candidate_logprobs(inputs, input_mask, cand[:, :width]).float()
    return out


@torch.no_grad()
def hf_constrained_generate(model, inputs: torch.Tensor, input_mask: torch.Tensor, trie: Trie,
                            beams: int, decoder_start: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: transformers ``generate`` with ``prefix_allowed_tokens_fn`` walking a Python
    dict trie (how the TIGER/LETTER/LC-Rec code bases constrain decoding). Returns items and
    sequence log-probabilities [B, beams], best first (raw sums: ``length_penalty=0``).

    Encoder-decoders only (``decoder_start``: the decoder's start token, which the callback
    skips)."""
    children: dict[tuple, list[int]] = {}
    leaf: dict[tuple, int] = {}
    tok = trie.child_tok.tolist()
    ptr = trie.child_ptr.tolist()
    node_of_prefix = {(): 0}
    stack = [()]
    child_node = trie.child_node.tolist()
    while stack:                                     # the trie as a dict of prefixes
        prefix = stack.pop()
        n = node_of_prefix[prefix]
        kids = tok[ptr[n]:ptr[n + 1]]
        children[prefix] = kids
        it = int(trie.leaf_item[n])
        if it:
            leaf[prefix] = it
        for t, c in zip(kids, child_node[ptr[n]:ptr[n + 1]]):
            node_of_prefix[prefix + (t,)] = c
            stack.append(prefix + (t,))
    pad = int(model.config.pad_token_id)

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        prefix = tuple(sent.tolist()[1:]) if decoder_start is not None else tuple(sent.tolist())
        while prefix and prefix[-1] == pad and prefix not in children:
            prefix = prefix[:-1]
        return children.get(prefix) or [pad]

    out = model.generate(input_ids=inputs, attention_mask=input_mask, num_beams=beams,
                         num_return_sequences=beams, max_new_tokens=trie.max_len,
                         prefix_allowed_tokens_fn=allowed, do_sample=False, length_penalty=0.0,
                         early_stopping=True, output_scores=True, return_dict_in_generate=True)
    seqs = out.sequences[:, 1:] if decoder_start is not None else out.sequences[:, inputs.shape[1]:]
    items = []
    for s in seqs.tolist():
        prefix = tuple(s)
        while prefix and prefix not in leaf:
            prefix = prefix[:-1]
        items.append(leaf.get(prefix, 0))
    b = inputs.shape[0]
    return torch.tensor(items).view(b, beams), out.sequences_scores.view(b, beams)

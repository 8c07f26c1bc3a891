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

:func:`greedy_decode` — unconstrained greedy generation (BIGRec generates a title freely, then
grounds it to items in text-embedding space).

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
                trie: Trie, beams: int, k: int | None = None,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items [B, k] (0 where fewer exist) and their log-probabilities [B, k].

    Each step scores only the trie's children of the live beams, gathered from the
    log-softmax into FIXED-width slots (the trie's widest fan-out at that depth; never a dense
    [B x beams, V] mask), keeps finished beams as candidates with their score unchanged, and
    takes each input's top ``beams`` candidates with one ``topk``. No step asks the host for a
    data-dependent size (no ``nonzero``, ``bincount`` or ``.item()``), so on a GPU the search
    never waits on the CPU; only variable-length identifiers check once per step whether all
    beams have finished.

    ``exclude`` ([B, M] item ids, 0 = none; e.g. the user's history under the masked
    protocol): per-row exclusion INSIDE the search. A child node all of whose items are
    excluded for that row (an excluded item's leaf, or a prefix that leads only to excluded
    items) is never a candidate, so the beam keeps its configured width, every live beam can
    still reach an admissible item, and the result is the k best non-excluded items the
    search reaches. Without exclusions the search is unchanged."""
    k = beams if k is None else k
    if k > beams:
        raise ValueError(f"top-{k} needs at least {k} beams, got {beams}")
    b = inputs.shape[0]
    dev = inputs.device
    rows = b * beams
    state = backbone.begin(inputs, input_mask, beams)
    nodes = torch.zeros(rows, dtype=torch.long, device=dev)                # all at the root
    scores = torch.full((rows,), NEG_INF, device=dev)
    scores[::beams] = 0.0                                                  # one live beam per input
    tokens = None
    pad = backbone.pad_id
    beam_row = torch.arange(rows, device=dev)
    user_of = beam_row // beams
    base = (torch.arange(b, device=dev) * beams).unsqueeze(1)
    dead = None if exclude is None or not bool((exclude > 0).any()) else trie.excluded(exclude)
    for depth in range(trie.max_len):
        live = scores > NEG_INF
        done = live & trie.is_leaf(nodes.clamp(min=0))
        grow = live & ~done
        # variable-length ids can all finish early (one host check per step); fixed-length
        # ids (codebooks) always take max_len steps and never ask
        if not trie.fixed_length and depth and not bool(grow.any()):
            break
        logp = torch.log_softmax(backbone.step(state, tokens).float(), dim=-1)
        f = trie.fanout[depth]
        tok, child, valid = trie.child_slots(torch.where(grow, nodes, torch.full_like(nodes, -1)), f)
        if dead is not None:
            valid &= ~trie.is_excluded(dead, user_of.unsqueeze(1).expand_as(child).reshape(-1),
                                       child.reshape(-1)).view(rows, f)
        c_score = torch.where(valid, scores.unsqueeze(1) + logp.gather(1, tok), NEG_INF)
        stay = torch.where(done, scores, NEG_INF)      # a finished beam continues by padding, at no cost
        # each input's candidates: its beams' child slots (beam-major), then its finished beams
        table = torch.cat([c_score.view(b, beams * f), stay.view(b, beams)], 1)
        top, idx = table.topk(beams, dim=1)
        is_child = idx < beams * f
        src = base + torch.where(is_child, idx // f, idx - beams * f)           # [b, beams]
        pick = idx.clamp(max=beams * f - 1)
        new_node = torch.where(is_child, child.view(b, beams * f).gather(1, pick), nodes[src])
        new_tok = torch.where(is_child, tok.view(b, beams * f).gather(1, pick), torch.full_like(idx, pad))
        ok = (top > NEG_INF).view(-1)
        backbone.reorder(state, torch.where(ok, src.view(-1), beam_row))
        nodes = torch.where(ok, new_node.view(-1), torch.full_like(nodes, -1))
        tokens = torch.where(ok, new_tok.view(-1), torch.full_like(nodes, pad))
        scores = top.reshape(-1)
    items = trie.leaf_item[nodes.clamp(min=0)].view(b, beams)
    scores = scores.view(b, beams)
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
def greedy_decode(backbone: GenerativeBackbone, inputs: torch.Tensor, input_mask: torch.Tensor,
                  max_len: int, eos_id: int) -> torch.Tensor:
    """[B, T] token ids (T <= ``max_len``) generated greedily, no constraint: at every step the
    most likely token; after a row's ``eos_id`` it gets ``backbone.pad_id``. Stops when every
    row has finished."""
    state = backbone.begin(inputs, input_mask, 1)
    tokens, out = None, []
    finished = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
    for _ in range(max_len):
        logits = backbone.step(state, tokens)
        tokens = logits.argmax(-1)
        tokens = torch.where(finished, torch.full_like(tokens, backbone.pad_id), tokens)
        finished |= tokens == eos_id
        out.append(tokens)
        if bool(finished.all()):
            break
    return torch.stack(out, 1)


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

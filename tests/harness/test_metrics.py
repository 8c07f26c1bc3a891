"""Recall/NDCG against hand-computed values; top-k masking and tie-breaking."""

import math

import numpy as np
import pytest
import torch

from benchmarks.evaluation.metrics import pad_targets, recall_ndcg
from benchmarks.protocol import topk_from_scores


def test_single_target_matches_hand_computed():
    topk = torch.tensor([[3, 1, 4, 5, 9],     # target 4 at rank 3
                         [2, 7, 1, 8, 6],     # target 9 missing
                         [5, 6, 7, 8, 9]])    # target 5 at rank 1
    targets = pad_targets([np.array([4]), np.array([9]), np.array([5])])
    m = recall_ndcg(topk, targets, (1, 3, 5))
    assert m[("recall", 1)].tolist() == [0, 0, 1]
    assert m[("recall", 3)].tolist() == [1, 0, 1]
    assert m[("ndcg", 3)] == pytest.approx([1 / math.log2(4), 0, 1])
    assert m[("ndcg", 5)] == pytest.approx([0.5, 0, 1])


def test_several_targets_per_user():
    # targets {2, 9, 4}; list 2 x 4 y y -> hits at ranks 1 and 3
    topk = torch.tensor([[2, 7, 4, 8, 6]])
    targets = pad_targets([np.array([2, 9, 4, 4])])        # repeated target counts once
    m = recall_ndcg(topk, targets, (2, 5))
    assert m[("recall", 2)][0] == pytest.approx(1 / 3)
    assert m[("recall", 5)][0] == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m[("ndcg", 5)][0] == pytest.approx(dcg / idcg)
    # K=2 with 3 targets: IDCG over min(3, 2) = 2 positions
    assert m[("ndcg", 2)][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_padding_never_hits_and_empty_targets_are_nan():
    topk = torch.tensor([[0, 0, 3], [1, 2, 3]])
    targets = pad_targets([np.array([3]), np.zeros(0, np.int64)])
    m = recall_ndcg(topk, targets, (3,))
    assert m[("recall", 3)][0] == 1 and math.isnan(m[("recall", 3)][1])


def test_topk_masks_padding_candidates_and_exclusions():
    scores = torch.tensor([[9.0, 1.0, 5.0, 3.0, 4.0, 2.0]])   # column 0 = padding
    items, _ = topk_from_scores(scores.clone(), 3)
    assert items.tolist() == [[2, 4, 3]]
    cand = torch.tensor([False, True, False, True, False, True])
    items, _ = topk_from_scores(scores.clone(), 3, candidates=cand)
    assert items.tolist() == [[3, 5, 1]]
    items, _ = topk_from_scores(scores.clone(), 3, exclude=torch.tensor([[2, 0]]))
    assert items.tolist() == [[4, 3, 5]]
    # fewer candidates than k: tail filled with item 0
    items, vals = topk_from_scores(scores.clone(), 3, candidates=torch.tensor([False, True, False, False, False, False]))
    assert items.tolist() == [[1, 0, 0]] and torch.isinf(vals[0, 1:]).all()


def test_ties_go_to_the_lower_item_id():
    scores = torch.tensor([[0.0, 1.0, 3.0, 3.0, 1.0, 3.0, 1.0]])
    items, _ = topk_from_scores(scores.clone(), 4)
    assert items.tolist() == [[2, 3, 5, 1]]

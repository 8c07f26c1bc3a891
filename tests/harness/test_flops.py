"""The bench scripts' FLOP counter: counted multiply-adds x 2 per user, parameters restored."""

import pytest
import torch

from benchmarks.evaluation.flops import block_parameters, counted_gflop


def test_counted_gflop_is_two_flops_per_multiply_add_per_user():
    lin = torch.nn.Linear(4, 3, bias=False)
    x = torch.randn(5, 4)
    # 5 rows x 4 x 3 multiply-adds = 60, x 2 = 120 FLOPs, over 5 users = 24 per user
    assert counted_gflop(lambda: lin(x), 5, lin) == pytest.approx(24e-9)
    assert lin.weight.requires_grad                      # frozen only while counting
    with pytest.raises(ValueError, match="n_users"):
        counted_gflop(lambda: lin(x), 0, lin)


def test_block_parameters_count_the_blocks_and_final_norms_only():
    class T5Like(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = torch.nn.Embedding(10, 4)                              # 40: not a block
            self.encoder = torch.nn.Module()
            self.encoder.block = torch.nn.ModuleList([torch.nn.Linear(4, 4)])   # 20
            self.encoder.final_layer_norm = torch.nn.LayerNorm(4)               # 8
    assert block_parameters(T5Like()) == 28


def test_block_parameters_count_a_decoder_only_lms_layers_and_final_norm():
    class QwenLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.embed_tokens = torch.nn.Embedding(10, 4)                  # 40: not a block
            self.model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])     # 20
            self.model.norm = torch.nn.LayerNorm(4)                              # 8
            self.lm_head = torch.nn.Linear(4, 10)                                # 50: not a block
    assert block_parameters(QwenLike()) == 28


def test_counted_gflop_counts_cpu_attention_like_two_matrix_products():
    """scaled_dot_product_attention on a CPU runs a kernel torch's counter has no formula for:
    counted as QK^T plus AV, with grouped key / value heads and an additive mask alike."""
    q = torch.randn(2, 4, 16, 8)
    kv = torch.randn(2, 2, 16, 8)
    expected = 2 * (2 * 2 * 4 * 16 * 16 * 8) / 2 / 1e9          # two products, per user (2 users)
    mask = torch.zeros(2, 1, 16, 16)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert counted_gflop(lambda: sdpa(q, q, q, attn_mask=mask), 2) == pytest.approx(expected)
    assert counted_gflop(lambda: sdpa(q, kv, kv, enable_gqa=True), 2) == pytest.approx(expected)

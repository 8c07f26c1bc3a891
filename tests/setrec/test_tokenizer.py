"""SETRec's set tokenizer: the autoencoder and its loss by hand, the CF token, the token table."""

import numpy as np
import pytest
import torch
from torch import nn

from identifiers.setrec import SemanticAutoencoder, SetTokenizer


def _identity_ae():
    ae = SemanticAutoencoder(2, 2, layers=(2,))
    for lin in [m for m in ae.modules() if isinstance(m, nn.Linear)]:
        with torch.no_grad():
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return ae


def test_autoencoder_loss_by_hand():
    ae = _identity_ae()
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    # encoder: I -> ReLU -> I; decoder: I -> ReLU -> I. Row 1: [1, -2] -> [1, 0] -> [1, 0];
    # row 2 is positive and comes back unchanged. MSE = (0 + 4 + 0 + 0) / 4 = 1.0
    z, x_hat = ae(x)
    assert torch.equal(z, torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    assert ae.reconstruction_loss(x).item() == pytest.approx(1.0)


def test_autoencoder_shape_and_init():
    ae = SemanticAutoencoder(384, 4 * 128)
    enc = [m for m in ae.encoder if isinstance(m, nn.Linear)]
    dec = [m for m in ae.decoder if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in enc] == [(384, 512), (512, 256), (256, 128), (128, 512)]
    assert [(m.in_features, m.out_features) for m in dec] == [(512, 128), (128, 256), (256, 512), (512, 384)]
    assert not isinstance(ae.encoder[-1], nn.ReLU) and not isinstance(ae.decoder[-1], nn.ReLU)
    assert sum(isinstance(m, nn.ReLU) for m in ae.encoder) == 3
    assert all(float(m.bias.detach().abs().max()) == 0 for m in enc + dec)
    # Xavier normal: std = sqrt(2 / (fan_in + fan_out))
    assert float(enc[0].weight.detach().std()) == pytest.approx((2 / (384 + 512)) ** 0.5, rel=0.05)


def test_token_table():
    torch.manual_seed(0)
    cf = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    text = np.random.default_rng(1).normal(size=(6, 7)).astype(np.float32)
    cf[0], text[0] = 0, 0
    tok = SetTokenizer(8, cf_table=cf, text_table=text, n_sem=3, ae_layers=(6, 4))
    tokens, recon = tok(torch.tensor([2, 2, 5]))
    assert tok.n_tokens == 4 and tokens.shape == (6, 4, 8)
    assert float(tokens[0].detach().abs().max()) == 0.0                        # padding row
    assert torch.allclose(tokens[3, 0], tok.cf_proj(torch.from_numpy(cf[3])))  # CF token
    z = tok.ae.encoder(torch.from_numpy(text[1:]))
    assert torch.allclose(tokens[1:, 1:].reshape(5, -1), z)                   # semantic tokens
    idx = torch.tensor([1, 1, 4])
    assert recon.item() == pytest.approx(nn.functional.mse_loss(tok.ae.decoder(z[idx]), torch.from_numpy(text[1:])[idx]).item(), rel=1e-5)
    # the CF table is frozen: not a parameter
    assert all(p.data_ptr() != tok.cf_table.data_ptr() for p in tok.parameters())
    # ablations
    assert SetTokenizer(8, cf_table=cf, text_table=None).n_tokens == 1
    assert SetTokenizer(8, cf_table=None, text_table=text, n_sem=2).n_tokens == 2
    with pytest.raises(ValueError):
        SetTokenizer(8, cf_table=None, text_table=None)

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reactfast.nn.transformer import encoder, multi_head_attention
from reactfast.ops import dropout


def _grads(module, loss):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("shared", ["self", "kv", "separate"])
@pytest.mark.parametrize("kdim", [None, 24])
def test_multi_head_attention_equals_torch(shared, kdim):
    torch.manual_seed(0)
    E, H = 32, 4
    mha = nn.MultiheadAttention(E, H, dropout=0.2, batch_first=True, kdim=kdim, vdim=kdim).double()
    x = torch.randn(3, 7, E, dtype=torch.float64)
    mem = torch.randn(3, 11, kdim or E, dtype=torch.float64)
    mem2 = torch.randn(3, 11, kdim or E, dtype=torch.float64)
    if shared == "self" and kdim is None:
        args = (x, x, x)
    elif shared in ("self", "kv"):
        args = (x, mem, mem)
    else:
        args = (x, mem, mem2)
    pad = torch.zeros(3, args[1].shape[1], dtype=torch.bool)
    pad[0, :3] = True
    pad[2, -1] = True
    for training, mask in ((False, None), (False, pad), (True, pad)):
        mha.train(training)
        if training:
            mha.dropout = 0.0     # the same function; dropout draws differ between the two
        want = mha(*args, key_padding_mask=mask, need_weights=False)[0]
        got = multi_head_attention(mha, *args, key_padding_mask=mask)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
        for a, b in zip(_grads(mha, want.square().sum()), _grads(mha, got.square().sum())):
            torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_equals_torch(norm_first):
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(16, 4, 40, dropout=0.0, batch_first=True, norm_first=norm_first)
    module = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double()
    x = torch.randn(4, 9, 16, dtype=torch.float64)
    pad = torch.zeros(4, 9, dtype=torch.bool)
    pad[1, :4] = True
    for training in (False, True):
        module.train(training)
        want = module(x, src_key_padding_mask=pad)
        got = encoder(module, x, pad)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_attention_dropout_is_applied_in_training():
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 2, dropout=0.5, batch_first=True)
    x = torch.randn(2, 6, 16)
    mha.eval()
    clean = multi_head_attention(mha, x, x, x)
    mha.train()
    a, b = multi_head_attention(mha, x, x, x), multi_head_attention(mha, x, x, x)
    assert not torch.allclose(a, clean) and not torch.allclose(a, b)
    mha.dropout = 0.0
    torch.testing.assert_close(multi_head_attention(mha, x, x, x), clean)


@pytest.mark.parametrize("tq", [1, 5])
def test_dropout_path_equals_the_formula_with_the_same_mask(tq):
    """In training with attention dropout: softmax(q k^T / sqrt(d) + mask), dropout, @ v, written
    out with the same generator state (so the same mask), for one query per row (the products-and-
    sums path) and for several (the matrix-product path); outputs and parameter gradients."""
    E, H, B, Tk = 32, 4, 6, 3
    d = E // H
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(E, H, dropout=0.3, batch_first=True).double().train()
    q = torch.randn(B, tq, E, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(B, Tk, E, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(B, Tk, dtype=torch.bool)
    pad[1, 0] = pad[4, 2] = True
    torch.manual_seed(7)
    got = multi_head_attention(mha, q, mem, mem, key_padding_mask=pad)

    def heads(t):
        return t.view(B, -1, H, d).transpose(1, 2)

    w, b = mha.in_proj_weight, mha.in_proj_bias
    qq, kk, vv = (heads(F.linear(t, w[i * E:(i + 1) * E], b[i * E:(i + 1) * E])) for i, t in enumerate((q, mem, mem)))
    bias = torch.zeros(B, Tk, dtype=torch.float64).masked_fill(pad, float("-inf"))[:, None, None]
    torch.manual_seed(7)
    probs = dropout(torch.softmax(qq @ kk.transpose(-1, -2) / d ** 0.5 + bias, -1), 0.3)
    want = mha.out_proj((probs @ vv).transpose(1, 2).reshape(B, tq, E))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    leaves = [q, mem] + [p for p in mha.parameters()]
    for a, c in zip(torch.autograd.grad(want.square().sum(), leaves), torch.autograd.grad(got.square().sum(), leaves)):
        torch.testing.assert_close(c, a, atol=1e-10, rtol=1e-9)

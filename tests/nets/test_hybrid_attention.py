"""nets/hybrid_attention.py: the chunk-parallel and recurrent forms agree (float64, random
weights), the model is causal across chunks, a one-chunk sequence is a plain flow transformer,
the state starts empty for every batch, and the decay matrix is the unrolled recurrence."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.nets.hybrid_attention import ARFlowTransformer, HybridAttention, chunk_decays

F64 = torch.float64


def random_model(mode: str = "hybrid", seed: int = 0, **kw) -> ARFlowTransformer:
    torch.manual_seed(seed)
    m = ARFlowTransformer(image_size=8, patch=2, dim=32, depth=2, heads=4, mode=mode, **kw).double()
    for p in m.parameters():  # zero-initialised gates would hide every path: randomise all
        p.data.normal_(0, 0.3)
    return m


def inputs(b: int = 3, c: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, 64, generator=g, dtype=F64)
    t = torch.rand(b, c, generator=g, dtype=F64).sort(1).values
    return x, t, torch.randint(10, (b,), generator=g)


def recurrent(m, x, t, y):
    state, outs = m.init_state(len(x), x), []
    for c in range(x.shape[1]):
        v, state = m.step(x[:, c], t[:, c], y, state)
        outs.append(v)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("mode", ["hybrid", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parallel_equals_recurrent(mode, seed):
    m, (x, t, y) = random_model(mode, seed), inputs(seed=seed + 10)
    v = m(x, t, y)
    assert v.abs().mean() > 0.1  # not a vacuous comparison of zeros
    assert torch.allclose(v, recurrent(m, x, t, y), rtol=1e-10, atol=1e-10)


def test_parallel_differs_from_recurrent_with_a_wrong_decay():
    """Negative control: a recurrence without the decay gamma gives different outputs."""
    m, (x, t, y) = random_model(), inputs()
    v = m(x, t, y)
    for a in m.attn:
        a.decay.bias.data.fill_(1e6)  # logsigmoid -> 0: gamma = 1, no decay
    assert not torch.allclose(v, m(x, t, y), atol=1e-6)


@pytest.mark.parametrize("mode", ["hybrid", "full"])
def test_causality_exactly(mode):
    m, (x, t, y) = random_model(mode), inputs()
    v = m(x, t, y)
    later = x.clone()
    later[:, 3:] += torch.randn_like(later[:, 3:])
    w = m(later, t, y)
    assert torch.equal(v[:, :3], w[:, :3])
    assert (v[:, 3:] - w[:, 3:]).abs().max() > 1e-3
    earlier = x.clone()
    earlier[:, 1] += 1.0  # an earlier chunk does change later outputs (the context path works)
    assert (m(earlier, t, y)[:, 2:] - v[:, 2:]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["hybrid", "full"])
def test_length_one_is_a_plain_flow_transformer(mode):
    m, (x, t, y) = random_model(mode), inputs(c=1)
    v = m(x, t, y)
    plain = random_model(mode)
    plain.cross_chunk = False
    assert torch.allclose(v, plain(x, t, y), rtol=0, atol=1e-12)
    # every chunk of the cut model is an independent image: a plain per-image transformer
    xs, ts, ys = inputs(c=4)
    each = torch.cat([plain(xs[:, i : i + 1], ts[:, i : i + 1], ys) for i in range(4)], 1)
    assert torch.allclose(plain(xs, ts, ys), each, atol=1e-12)
    assert not torch.allclose(m(xs, ts, ys)[:, 1:], each[:, 1:], atol=1e-6)


def test_state_starts_empty_per_batch():
    m, (x, t, y) = random_model(), inputs()
    first = recurrent(m, x, t, y)
    again = recurrent(m, x, t, y)  # a new batch: a fresh state, the same outputs
    assert torch.equal(first, again)
    state = m.init_state(3, x)
    assert all(float(s["S"].abs().max()) == 0 for s in state)
    with torch.no_grad():
        _, new = m.step(x[:, 0], t[:, 0], y, state)
    assert all(float(s["S"].abs().max()) == 0 for s in state)  # not modified in place
    assert all(float(s["S"].abs().max()) > 0 for s in new)


def test_chunk_decays_unroll_the_recurrence():
    g = torch.Generator().manual_seed(3)
    log_gamma = -torch.rand(6, 4, generator=g, dtype=F64)
    kv = torch.randn(6, 4, 5, generator=g, dtype=F64)
    s, states = torch.zeros(4, 5, dtype=F64), []
    for c in range(6):
        states.append(s)
        s = log_gamma[c].exp()[:, None] * s + kv[c]
    unrolled = torch.einsum("ced,edf->cdf", chunk_decays(log_gamma), kv)
    assert torch.allclose(unrolled, torch.stack(states), atol=1e-12)


def test_contributions_are_causal_and_match_the_output_paths():
    m, (x, t, y) = random_model(), inputs(b=1, c=4)
    a = m.chunk_contributions(x, t, y)
    assert a.shape == (2, 1, 4, 4)
    assert torch.all(a[..., 0, 1:] == 0) and torch.all(a.tril() == a)
    assert torch.all(a.diagonal(dim1=-2, dim2=-1) > 0)
    full = random_model("full").chunk_contributions(x, t, y)
    assert torch.all(full.tril() == full) and full[..., 3, 0].min() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        HybridAttention(32, 4, mode="sliding")
    with pytest.raises(ValueError, match="multiple of heads"):
        HybridAttention(30, 4)
    with pytest.raises(ValueError, match="patch must divide"):
        ARFlowTransformer(image_size=8, patch=3)


def test_tokens_round_trip_and_are_patches():
    m = ARFlowTransformer(image_size=8, patch=2, dim=16, depth=1, heads=2)
    x = torch.randn(2, 3, 64)
    tok = m.tokenize(x)
    assert tok.shape == (2, 3, 16, 4) and torch.equal(m.untokenize(tok), x)
    assert torch.equal(tok[1, 2, 5], x[1, 2].reshape(8, 8)[2:4, 2:4].reshape(-1))

from __future__ import annotations

import math

import pytest
import torch

from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, drop_labels
from pflow_explore.nets.mlp import MLP, SHIPPED_TIME_SCALE


@pytest.mark.parametrize("t", [0.3, torch.tensor(0.3), torch.rand(7), torch.rand(7, 1)])
def test_mlp_shapes_for_every_time_form(t):
    torch.manual_seed(0)
    net = MLP(3, hidden=32, depth=2, time_dim=16)
    assert net(torch.randn(7, 3), t).shape == (7, 3)


def test_scalar_time_equals_broadcast_time_and_float64_time_is_accepted():
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, time_dim=16)
    x = torch.randn(5, 2)
    a = net(x, 0.25)
    b = net(x, torch.full((5,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(a, b)
    assert a.dtype == torch.float32


def test_time_changes_output_per_sample():
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, time_dim=16)
    x = torch.randn(1, 2).expand(4, 2)
    out = net(x, torch.tensor([0.0, 0.3, 0.6, 1.0]))
    assert (out[1:] - out[:1]).abs().amax(dim=1).min() > 1e-5


def test_class_conditioning_changes_output_and_none_is_null_class():
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, time_dim=16, n_classes=4)
    x, t = torch.randn(6, 2), torch.rand(6)
    y0 = torch.zeros(6, dtype=torch.long)
    y1 = torch.ones(6, dtype=torch.long)
    assert (net(x, t, y0) - net(x, t, y1)).abs().max() > 1e-4
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.full((6,), 4)))


def test_bad_inputs_raise_value_error():
    net = MLP(2, hidden=16, depth=1, time_dim=8)
    with pytest.raises(ValueError, match="n_classes=None"):
        net(torch.randn(3, 2), 0.5, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        net(torch.randn(3, 5), 0.5)
    with pytest.raises(ValueError, match="one value per sample"):
        net(torch.randn(3, 2), torch.rand(4))
    cond = MLP(2, hidden=16, depth=1, time_dim=8, n_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        cond(torch.randn(3, 2), 0.5, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="depth"):
        MLP(2, depth=0)


def test_mlp_overfits_a_fixed_mapping():
    torch.manual_seed(0)
    x, t = torch.randn(64, 2), torch.rand(64)
    target = torch.stack([torch.sin(2 * x[:, 0]) + t, x[:, 0] * x[:, 1] - t], dim=1)
    net = MLP(2, hidden=64, depth=2, time_dim=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = ((net(x, t) - target) ** 2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


def test_sinusoidal_features_match_the_formula():
    emb = TimeEmbedding(8)
    t = torch.tensor([0.0, 0.1, 0.7])
    k = torch.arange(4, dtype=torch.float64)
    freqs = 1000.0 * 10_000.0 ** (-k / 4)
    arg = t.double()[:, None] * freqs
    expected = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).float()
    torch.testing.assert_close(emb.features(t), expected, rtol=1e-4, atol=1e-4)


def test_log_scale_embedding_is_finite_at_zero_and_distinguishes_sigmas():
    emb = TimeEmbedding(16, log_scale=True, kind="fourier")
    feats = emb.features(torch.tensor([0.0, 0.002, 1.0, 80.0]))
    assert torch.isfinite(feats).all()
    assert (feats[2] - feats[3]).abs().max() > 0.1
    # log_scale: features depend on log(sigma)/4, so sigma = 1 gives u = 0 -> sin 0, cos 1
    torch.testing.assert_close(feats[2], torch.cat([torch.zeros(8), torch.ones(8)]))
    assert emb(torch.tensor(0.5), batch=3).shape == (3, 16)


def test_time_embedding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        TimeEmbedding(7)
    with pytest.raises(ValueError, match="kind"):
        TimeEmbedding(8, kind="gaussian")


def test_class_embedding_and_drop_labels():
    emb = ClassEmbedding(10, 4)
    assert emb.null == 10
    assert emb(None, 3).shape == (3, 4)
    with pytest.raises(ValueError, match="integer"):
        emb(torch.tensor([0.5, 1.0, 2.0]), 3)
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20_000,), generator=gen)
    dropped = drop_labels(y, 0.2, 10, generator=gen)
    frac = (dropped == 10).float().mean().item()
    assert abs(frac - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    kept = dropped != 10
    assert torch.equal(dropped[kept], y[kept])
    assert torch.equal(drop_labels(y, 0.0, 10), y)
    assert (drop_labels(y, 1.0, 10) == 10).all()
    with pytest.raises(ValueError, match="p must"):
        drop_labels(y, 1.5, 10)


def test_time_scale_sets_the_fastest_frequency_and_draws_the_same_weights():
    torch.manual_seed(0)
    default = MLP(2, hidden=16, depth=2, time_dim=8)
    torch.manual_seed(0)
    slow = MLP(2, hidden=16, depth=2, time_dim=8, time_scale=1.0)
    # sinusoidal frequencies scale * 10000^(-k / 4), k = 0..3; the default scale is 30
    torch.testing.assert_close(
        default.time_embedding.freqs, 30.0 * 10_000.0 ** (-torch.arange(4.0) / 4)
    )
    shipped = MLP(2, hidden=16, depth=2, time_dim=8, time_scale=SHIPPED_TIME_SCALE)
    torch.testing.assert_close(
        shipped.time_embedding.freqs, 1000.0 * 10_000.0 ** (-torch.arange(4.0) / 4)
    )
    assert default.fast_condition and not MLP(2, fast_condition=False).fast_condition
    torch.testing.assert_close(slow.time_embedding.freqs, 10_000.0 ** (-torch.arange(4.0) / 4))
    a, b = default.state_dict(), slow.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == ["time_embedding.freqs"]


def test_small_time_scale_gives_features_smooth_in_t():
    # d/dt sin(f t) = f cos(f t): the largest slope of a feature is the largest frequency
    t = torch.linspace(0, 1, 10_001)
    for scale, bound in ((1.0, 1.0), (1000.0, 1000.0)):
        feats = MLP(2, time_dim=16, time_scale=scale).time_embedding.features(t)
        slope = (feats[1:] - feats[:-1]).abs().amax() / (t[1] - t[0])
        assert 0.9 * bound < float(slope) <= 1.001 * bound


@pytest.mark.parametrize("n_classes, y", [(None, None), (3, torch.tensor(1)), (3, None)])
def test_fast_condition_is_the_same_function(n_classes, y):
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=3, time_dim=16, n_classes=n_classes)
    x = torch.randn(50, 2, dtype=torch.float64)
    net = net.double()
    slow = net(x, 0.37, y)
    net.fast_condition = True
    fast = net(x, 0.37, y)
    torch.testing.assert_close(
        fast, slow, rtol=1e-12, atol=1e-12
    )  # float64: W[h, c] = W_h h + W_c c
    assert not torch.equal(fast.float(), torch.zeros_like(fast.float()))
    # per-sample times (training) take the default path: bit for bit the same
    t = torch.rand(50, dtype=torch.float64)
    net.fast_condition = False
    ref = net(x, t, y)
    net.fast_condition = True
    assert torch.equal(net(x, t, y), ref)
    assert "fast_condition" not in str(list(net.state_dict()))


def test_fast_condition_trains_like_the_default_path():
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_dim=8, fast_condition=True)
    x = torch.randn(8, 2)
    net(x, 0.5).pow(2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    net.fast_condition = False
    net(x, 0.5).pow(2).sum().backward()
    for a, p in zip(grads, [p for p in net.parameters() if p.grad is not None], strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_out_dim_gives_a_narrower_head():
    from pflow_explore.nets.mlp import MLP

    net = MLP(6, hidden=8, depth=2, out_dim=2)
    x = torch.randn(5, 6)
    assert net(x, 0.3).shape == (5, 2)
    assert net(x, torch.rand(5)).shape == (5, 2)  # the per-row path agrees in shape
    assert torch.allclose(net(x, 0.3), net(x, torch.full((5,), 0.3)), atol=1e-6)

"""ar_flow.py: training sequences (same class, distinct images, sorted times), the loss
against a hand computation, recurrent generation against the parallel form, the per-step
timer and the slope fit."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import ar_flow as af
from pflow_explore.nets.hybrid_attention import ARFlowTransformer

F64 = torch.float64


def random_model(mode="hybrid", seed=0):
    torch.manual_seed(seed)
    m = ARFlowTransformer(image_size=8, patch=2, dim=32, depth=2, heads=4, mode=mode).double()
    for p in m.parameters():
        p.data.normal_(0, 0.2)
    return m


def test_sequences_are_distinct_images_of_one_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(7)
    images = torch.arange(70.0)[:, None].expand(70, 4)  # image i carries its index
    x1, y = af.same_class_sequences(images, labels, 40, 5, g)
    assert x1.shape == (40, 5, 4) and y.shape == (40,)
    idx = x1[..., 0].long()
    assert torch.all(labels[idx] == y[:, None])
    assert all(len(set(row.tolist())) == 5 for row in idx)
    with pytest.raises(ValueError, match="exceeds"):
        af.same_class_sequences(images, labels, 2, 8, g)


def test_sorted_times_and_noisy_sequence():
    g = torch.Generator().manual_seed(1)
    t = af.sorted_times(100, 5, g)
    assert torch.all(t[:, 1:] >= t[:, :-1]) and 0 <= float(t.min()) and float(t.max()) <= 1
    x1, z = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    tt = torch.rand(2, 3, generator=g)
    xt = af.noisy_sequence(x1, z, tt)
    assert torch.allclose(xt[1, 2], tt[1, 2] * x1[1, 2] + (1 - tt[1, 2]) * z[1, 2])


def test_loss_is_the_mean_squared_velocity_error():
    m = random_model()
    g = torch.Generator().manual_seed(2)
    x1, z = (
        torch.randn(2, 3, 64, generator=g, dtype=F64),
        torch.randn(2, 3, 64, generator=g, dtype=F64),
    )
    t, y = af.sorted_times(2, 3, g).double(), torch.tensor([1, 7])
    v = m(t[..., None] * x1 + (1 - t[..., None]) * z, t, y)
    by_hand = sum(((v[b, i] - (x1[b, i] - z[b, i])) ** 2).sum() for b in range(2) for i in range(3))
    assert torch.isclose(af.sequence_loss(m, x1, z, t, y), by_hand / (2 * 3 * 64))


@pytest.mark.parametrize("mode", ["hybrid", "full"])
def test_recurrent_generation_equals_the_parallel_form(mode):
    m, g = random_model(mode), torch.Generator().manual_seed(3)
    z, y = torch.randn(4, 64, generator=g, dtype=F64), torch.tensor([0, 3, 5, 9])
    out = af.generate(m, z, y, 6, trajectory=True)
    assert torch.allclose(out.x, af.generate_parallel(m, z, y, 6), atol=1e-10)
    assert out.chunks.shape == (7, 4, 64) and torch.equal(out.chunks[0], z)
    assert len(out.state_norms) == 6
    plain = af.generate(m, z, y, 6, context=False)  # the context changes the samples
    assert (plain.x - out.x).abs().max() > 1e-3
    assert torch.equal(af.generate(m, z, y, 6).x, out.x)  # a fresh state per call


def test_objective_updates_on_equal_image_counts():
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(10).repeat_interleave(6)
    images = torch.randn(60, 64)
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y):
            seen.append(x.shape)
            return x * self.w

    for length in (1, 3, 5):
        af.objective(images, labels, length, 30, g)(Spy(), 0)
    assert [s[0] * s[1] for s in seen] == [30, 30, 30]


def test_step_timer_and_slope():
    m = ARFlowTransformer(image_size=8, patch=2, dim=16, depth=1, heads=2, mode="full")
    sec = af.per_step_seconds(m, [1, 4], batch=2, repeats=3)
    assert set(sec) == {1, 4} and all(v > 0 for v in sec.values())
    b, a = af.fit_slope([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])
    assert b == pytest.approx(2.0) and a == pytest.approx(1.0)

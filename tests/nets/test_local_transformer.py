"""LocalTransformer and its neighbour search: symmetries, locality, chunking, gradients.

Symmetries are checked in float64 on random configurations; the neighbour search is
compared with a brute-force search over all periodic images (not with the minimum-image
formula the code uses).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pflow_explore.nets.local_transformer import (
    LocalTransformer,
    cutoff_envelope,
    knn,
    wrap_displacement,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def net64(**kwargs) -> LocalTransformer:
    torch.manual_seed(kwargs.pop("seed", 0))
    return LocalTransformer(**kwargs).double().eval()


def random_system(b: int, n: int, side: float = 4.0, seed: int = 0, c: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = side * torch.rand(b, n, 2, generator=g, dtype=F64)
    features = torch.randn(b, n, c, generator=g, dtype=F64)
    return x, features


def brute_neighbours(x: np.ndarray, k: int, box: float | None):
    """Distances to every other particle, minimised over all 3^d periodic images."""
    n, d = x.shape
    shifts = (
        [np.zeros(d)]
        if box is None
        else [box * np.array(s) for s in itertools.product([-1, 0, 1], repeat=d)]
    )
    dist = np.full((n, n), np.inf)
    for s in shifts:
        dist = np.minimum(dist, np.linalg.norm(x[None, :, :] + s - x[:, None, :], axis=-1))
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1)[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def test_wrap_displacement_is_the_minimum_image():
    g = torch.Generator().manual_seed(1)
    dx = 30 * torch.randn(1000, 2, generator=g, dtype=F64)
    w = wrap_displacement(dx, 3.5)
    assert (w.abs() <= 1.75 + 1e-12).all()
    turns = (dx - w) / 3.5
    torch.testing.assert_close(turns, turns.round(), rtol=0, atol=1e-9)
    assert wrap_displacement(dx, None) is dx


@pytest.mark.parametrize("box", [None, 3.0])
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_knn_matches_a_brute_force_search_over_images(box, chunk):
    x, _ = random_system(2, 37, side=3.0, seed=2)
    k = 6
    idx, rel, dist = knn(x, k, box=box, chunk=chunk)
    assert idx.shape == (2, 37, k) and idx.dtype == torch.long
    assert rel.shape == (2, 37, k, 2) and dist.shape == (2, 37, k)
    for b in range(2):
        order, ref = brute_neighbours(x[b].numpy(), k, box)
        np.testing.assert_array_equal(idx[b].numpy(), order)
        np.testing.assert_allclose(dist[b].numpy(), ref, rtol=1e-12)
        # rel is x_j - x_i up to whole box turns, and its length is the distance
        diff = x[b][idx[b]] - x[b][:, None, :] - rel[b]
        if box is None:
            torch.testing.assert_close(diff, torch.zeros_like(diff))
        else:
            torch.testing.assert_close(diff / box, (diff / box).round(), rtol=0, atol=1e-9)
        torch.testing.assert_close(rel[b].norm(dim=-1), dist[b])
    assert (idx != torch.arange(37).view(1, -1, 1)).all()  # never oneself


def test_knn_clips_k_and_is_differentiable_in_positions():
    x, _ = random_system(1, 5, seed=3)
    idx, rel, dist = knn(x, 50)
    assert idx.shape == (1, 5, 4)  # k clipped to N - 1
    x.requires_grad_(True)
    _, rel, dist = knn(x, 2, box=4.0)
    dist.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k"):
        knn(x, -1)
    with pytest.raises(ValueError, match="chunk"):
        knn(x, 2, chunk=0)
    with pytest.raises(ValueError, match="box"):
        knn(x, 2, box=-1.0)
    with pytest.raises(ValueError, match=r"\(B, N, d\)"):
        knn(x[0], 2)


@pytest.mark.parametrize("box, cutoff", [(None, None), (4.0, 1.5)])
def test_permuting_particles_permutes_the_outputs(box, cutoff):
    net = net64(k=5, box=box, cutoff=cutoff)
    x, c = random_system(2, 24, seed=4)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    out = net(x, c)
    torch.testing.assert_close(net(x[:, perm], c[:, perm]), out[:, perm])
    assert out.std(dim=1).min() > 1e-4  # particles do get different outputs


def test_outputs_are_invariant_under_translations_in_open_space():
    net = net64(k=5)
    x, c = random_system(2, 20, seed=6)
    shift = torch.tensor([13.7, -4.2], dtype=F64)
    torch.testing.assert_close(net(x + shift, c), net(x, c))
    squeezed = x * torch.tensor([1.0, 0.5], dtype=F64)  # not a translation: outputs move
    assert (net(squeezed, c) - net(x, c)).abs().max() > 1e-4


def test_outputs_are_invariant_under_translations_with_periodic_wrap():
    box = 4.0
    net = net64(k=5, box=box, cutoff=1.8)
    x, c = random_system(2, 20, side=box, seed=7)
    shift = torch.tensor([2.9, -1.3], dtype=F64)
    moved = torch.remainder(x + shift, box)  # particles leaving the box re-enter opposite
    assert ((x + shift) != moved).any()
    torch.testing.assert_close(net(moved, c), net(x, c))
    open_net = net64(k=5)  # the same move in open space is not a translation
    assert (open_net(moved, c) - open_net(x, c)).abs().max() > 1e-4


def receptive_field(idx: np.ndarray, i: int, layers: int) -> set[int]:
    """Particles whose positions or features can reach particle i's output in ``layers`` hops."""
    field = {i}
    for _ in range(layers):
        field |= {int(j) for m in field for j in idx[m]}
    return field


def test_a_particle_outside_the_receptive_field_does_not_change_the_output():
    layers, k = 2, 3
    net = net64(k=k, layers=layers)
    x, c = random_system(1, 80, side=6.0, seed=8)
    idx = knn(x, k)[0][0].numpy()
    field = receptive_field(idx, 0, layers)
    outside = next(j for j in range(1, 80) if j not in field)
    inside = int(idx[0, 0])
    out = net(x, c)[0, 0]
    for j, should_change in ((outside, False), (inside, True)):
        moved = x.clone()
        moved[0, j] += 1e-3  # small: every neighbour set stays the same
        assert (knn(moved, k)[0][0].numpy() == idx).all()
        changed = (net(moved, c)[0, 0] - out).abs().max()
        assert (changed > 1e-9) == should_change, (j, float(changed))
    feats = c.clone()
    feats[0, outside] += 1.0
    torch.testing.assert_close(net(x, feats)[0, 0], out)


def test_moving_a_far_particle_changes_no_other_output():
    net = net64(k=6)
    x, c = random_system(1, 30, side=1.0, seed=9)
    x[0, -1] = torch.tensor([50.0, 50.0], dtype=F64)
    out = net(x, c)
    moved = x.clone()
    moved[0, -1] = torch.tensor([-70.0, 20.0], dtype=F64)
    new = net(moved, c)
    torch.testing.assert_close(new[:, :-1], out[:, :-1])
    assert (new[0, -1] - out[0, -1]).abs().max() > 1e-6  # its own view did change


def test_neighbours_beyond_the_cutoff_are_ignored():
    cutoff = 0.5
    x = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.0, 0.35], [1.2, 0.1]]], dtype=F64)
    c = torch.randn(1, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(10))
    moved = x.clone()
    moved[0, 3] = torch.tensor([0.9, -0.6], dtype=F64)  # still a neighbour, still beyond r_c
    for radius, should_change in ((cutoff, False), (None, True)):
        net = net64(k=3, layers=1, cutoff=radius)
        changed = (net(moved, c)[0, 0] - net(x, c)[0, 0]).abs().max()
        assert (changed > 1e-9) == should_change
    d = torch.linspace(0, 1, 11, dtype=F64)
    f = cutoff_envelope(d, 0.5)
    assert f[0] == 1 and (f[5:] == 0).all() and (f.diff()[:5] < 0).all()


def test_the_same_weights_run_at_any_n_and_far_particles_do_not_matter():
    net = net64(k=6)
    x16, c16 = random_system(1, 16, seed=11)
    x64, c64 = random_system(1, 64, seed=12)
    assert net(x16, c16).shape == (1, 16, 4) and net(x64, c64).shape == (1, 64, 4)
    # The 16 particles with 48 others 1000 units away: nobody's neighbourhood changes
    far = x64[:, 16:] + 1000.0
    big = net(torch.cat([x16, far], dim=1), torch.cat([c16, c64[:, 16:]], dim=1))
    torch.testing.assert_close(big[:, :16], net(x16, c16))


@pytest.mark.parametrize("box, cutoff", [(None, None), (4.0, 1.2)])
def test_forward_chunked_equals_forward(box, cutoff):
    net = net64(k=5, box=box, cutoff=cutoff, layers=3)
    x, c = random_system(2, 29, seed=13)
    full = net(x, c)
    for chunk, knn_chunk in ((1, None), (7, 4), (29, 1), (100, None)):
        torch.testing.assert_close(net.forward_chunked(x, c, chunk, knn_chunk), full)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_chunked(x, c, 8), full.detach())
    with pytest.raises(ValueError, match="chunk"):
        net.forward_chunked(x, c, 0)
    # gradients through the chunked path too (training on large N may use it)
    w = torch.randn(full.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad((net(xa, c) * w).sum(), xa)
    (gb,) = torch.autograd.grad((net.forward_chunked(xb, c, 6) * w).sum(), xb)
    torch.testing.assert_close(gb, ga)


def test_gradients_reach_every_parameter_and_match_finite_differences():
    net = net64(k=4, box=4.0, cutoff=1.6, layers=2)
    x, c = random_system(1, 12, seed=14)
    loss = net(x, c).square().sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # d out / d x by autograd vs central differences (neighbour sets fixed for small h)
    xg = x.clone().requires_grad_(True)
    w = torch.randn(1, 12, 4, dtype=F64, generator=torch.Generator().manual_seed(15))
    (grad,) = torch.autograd.grad((net(xg, c) * w).sum(), xg)
    h = 1e-6
    for i, a in ((0, 0), (5, 1), (11, 0)):
        e = torch.zeros_like(x)
        e[0, i, a] = h
        with torch.no_grad():
            fd = ((net(x + e, c) * w).sum() - (net(x - e, c) * w).sum()) / (2 * h)
        assert abs(float(fd) - float(grad[0, i, a])) < 1e-6 * max(1.0, abs(float(fd)))


def test_no_feature_network_and_bad_arguments():
    net = net64(feature_dim=0, out_dim=2, k=3)
    x, _ = random_system(2, 10, seed=16)
    assert net(x).shape == (2, 10, 2)
    with pytest.raises(ValueError, match="width must be a multiple of heads"):
        LocalTransformer(width=30, heads=4)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        LocalTransformer(k=0)
    with pytest.raises(ValueError, match="cutoff"):
        LocalTransformer(cutoff=-1.0)
    feats = net64(k=3)
    with pytest.raises(ValueError, match=r"features must have shape \(B, N, feature_dim\)"):
        feats(x, torch.zeros(2, 10, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 2\)"):
        feats(torch.zeros(2, 10, 3, dtype=F64), torch.zeros(2, 10, 2, dtype=F64))

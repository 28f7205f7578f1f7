"""nsg.py: temporal differences (exact on linear motion, one-sided ends), the NSG with its
sign-aware floor, the PCA-Gaussian score against autograd, Tweedie's score of a denoiser,
the heavy-tail filter and the feature kinds."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import nsg as N

F64 = torch.float64


def test_temporal_difference_is_exact_on_linear_motion_and_one_sided_at_the_ends():
    g = torch.Generator().manual_seed(0)
    x0, v = torch.randn(2, 3, 5, generator=g, dtype=F64)
    video = x0[:, None] + torch.arange(6, dtype=F64)[None, :, None] * v[:, None]
    assert torch.allclose(N.temporal_difference(video), v[:, None].expand(3, 6, 5))
    q = video**2  # quadratic: the central difference is exact inside, not at the ends
    dx = N.temporal_difference(q)
    assert torch.allclose(dx[:, 2], (q[:, 3] - q[:, 1]) / 2)
    assert torch.allclose(dx[:, 0], q[:, 1] - q[:, 0]) and torch.allclose(
        dx[:, -1], q[:, -1] - q[:, -2]
    )
    with pytest.raises(ValueError, match="T >= 2"):
        N.temporal_difference(torch.zeros(2, 1, 3))


def test_nsg_floor_keeps_the_sign():
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    dx = torch.tensor([[1e-4, 5.0], [-1e-4, 5.0], [1.0, 0.0], [0.0, 1.0]])
    out = N.nsg(s, dx, eps=0.1)
    assert torch.allclose(out[:, 0], torch.tensor([10.0, -10.0, 1.0, 10.0]))
    assert torch.allclose((out[2] * dx[2]).sum(), torch.tensor(1.0))  # <NSG, dx> = 1 above eps
    with pytest.raises(ValueError):
        N.nsg(s, dx, 0.0)


def test_gaussian_score_matches_autograd_of_its_density():
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(500, 4, generator=g) @ torch.randn(4, 4, generator=g) + 0.3
    sigma = 0.2
    model = N.GaussianScore.fit(frames, sigma)
    cov = torch.cov((frames.double() - frames.double().mean(0)).T) + sigma**2 * torch.eye(
        4, dtype=F64
    )
    law = torch.distributions.MultivariateNormal(frames.double().mean(0), cov)
    x = torch.randn(10, 4, generator=g, dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(law.log_prob(x).sum(), x)
    assert torch.allclose(model(x.detach().float()).double(), grad, rtol=1e-3, atol=1e-3)
    low = N.GaussianScore.fit(frames, sigma, rank=2)  # PCA: a different covariance
    assert not torch.allclose(low(x.detach().float()).double(), grad, atol=1e-2)


def test_tweedie_score_of_the_optimal_linear_denoiser():
    # data N(0, I): the optimal denoiser at sigma is x / (1 + sigma^2), score -x / (1 + sigma^2)
    sigma = 0.3
    lin = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3) / (1 + sigma**2))
    x = torch.randn(5, 3)
    assert torch.allclose(N.denoiser_score(lin, sigma)(x), -x / (1 + sigma**2), atol=1e-6)


def test_denoiser_training_loss_decreases():
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(256, 8, generator=g)
    net = N.FrameDenoiser(8, 32, 2)
    loss = N.denoising_loss(frames, 0.5, 64, g)
    first = float(loss(net, 0))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for step in range(150):
        opt.zero_grad()
        loss(net, step).backward()
        opt.step()
    assert float(loss(net, 0)) < first


def test_scaler_clips_heavy_tails_and_features_have_their_kinds():
    feats = torch.cat([torch.randn(1000), torch.tensor([1e6, -1e6])])
    sc = N.NSGScaler.fit(feats, 0.99)
    out = sc(feats)
    assert out.abs().max() <= sc.clip / sc.scale + 1e-6 and sc.clip < 10
    video = torch.randn(2, 4, 6)
    score = lambda x: -x
    assert torch.equal(N.video_features(video, score, "frames", 0.1), video)
    assert torch.equal(N.video_features(video, score, "spatial", 0.1), -video)
    assert torch.equal(
        N.video_features(video, score, "temporal", 0.1), N.temporal_difference(video)
    )
    full = N.video_features(video, score, "nsg", 1e-6)
    assert torch.allclose((full * N.temporal_difference(video)).sum(-1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="kind"):
        N.video_features(video, score, "optical flow", 0.1)

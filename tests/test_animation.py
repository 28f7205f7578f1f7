"""animation.py: the geometry of chapter 10 against independent numerics on random inputs:
Bezier derivatives (finite differences, the Bernstein sum written out), Jacobians (the
affine map they must be), ARAP energy (zero for rigid motions, positive otherwise), Poisson
recovery (the mesh from its own Jacobians), ARAP deformation from rigidly moved handles, the
Jacobian ODE (its relaxation term) and the soft rasterizer (gradients reach the vertices)."""

from __future__ import annotations

import math

import pytest
import torch

from pflow_explore import animation as an

F64 = torch.float64


@pytest.fixture(scope="module")
def clip():
    return an.make_clipart("stick", 0.1)


def test_bezier_matches_the_bernstein_sum_and_finite_differences():
    gen = torch.Generator().manual_seed(0)
    P, tau = torch.randn(3, 4, 2, generator=gen, dtype=F64), torch.rand(6, generator=gen, dtype=F64)
    t = tau[:, None]
    by_hand = (
        (1 - t) ** 3 * P[:, None, 0]
        + 3 * (1 - t) ** 2 * t * P[:, None, 1]
        + 3 * (1 - t) * t**2 * P[:, None, 2]
        + t**3 * P[:, None, 3]
    )
    assert torch.allclose(an.bezier(P, tau), by_hand)
    h = 1e-5
    for k in (1, 2, 3):
        fd = (an.bezier(P, tau + h, k - 1) - an.bezier(P, tau - h, k - 1)) / (2 * h)
        assert torch.allclose(an.bezier(P, tau, k), fd, atol=1e-6)
    assert an.bezier(P, tau, 4).abs().max() == 0  # a cubic's fourth derivative
    ends = an.bezier(P, torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.allclose(ends[:, 0], P[:, 0]) and torch.allclose(ends[:, 1], P[:, 3])


def test_jacobians_recover_an_affine_map(clip):
    gen = torch.Generator().manual_seed(1)
    A, b = torch.randn(2, 2, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)
    V0 = clip.vertices.double()
    J = an.jacobians(V0, V0 @ A.T + b, clip.faces)
    assert torch.allclose(J, A.expand_as(J), atol=1e-9)
    assert torch.allclose(
        an.areas(V0 @ A.T, clip.faces), torch.linalg.det(A) * an.areas(V0, clip.faces)
    )


def test_arap_energy_is_zero_for_rigid_motions_and_positive_otherwise(clip):
    gen = torch.Generator().manual_seed(2)
    V0, w = clip.vertices.double(), an.areas(clip.vertices.double(), clip.faces).abs()
    for _ in range(5):
        R = an.rotation(2 * math.pi * torch.rand((), generator=gen, dtype=F64))
        V = V0 @ R.T + torch.randn(2, generator=gen, dtype=F64)
        assert an.arap_energy(an.jacobians(V0, V, clip.faces), w) < 1e-20
        assert an.area_distortion(an.jacobians(V0, V, clip.faces), w) < 1e-12
    stretched = V0 * torch.tensor([1.2, 1.0], dtype=F64)
    assert an.arap_energy(an.jacobians(V0, stretched, clip.faces), w) > 1e-3
    # the closest rotation beats random rotations in Frobenius distance
    J = torch.randn(50, 2, 2, generator=gen, dtype=F64)
    best = ((J - an.closest_rotation(J)) ** 2).sum((-1, -2))
    for a in torch.linspace(0, 2 * math.pi, 64, dtype=F64):
        assert (best <= ((J - an.rotation(a)) ** 2).sum((-1, -2)) + 1e-12).all()


def test_poisson_recovers_the_mesh_from_its_own_jacobians(clip):
    gen = torch.Generator().manual_seed(3)
    V0 = clip.vertices.double()
    system = an.PoissonSystem(V0, clip.faces)
    V = V0 + 0.05 * torch.randn(V0.shape, generator=gen, dtype=F64)
    V = torch.stack([V, V @ an.rotation(torch.tensor(1.0, dtype=F64)).T])  # a batch of two
    J = an.jacobians(V0, V, clip.faces)
    assert torch.allclose(system.solve(J, V.mean(-2)), V, atol=1e-9)
    # least squares: a perturbed target gives the argmin, so any move raises the objective
    Jn = J[0] + 0.1 * torch.randn(J[0].shape, generator=gen, dtype=F64)
    W = system.solve(Jn, V[0].mean(0))
    obj = lambda X: (
        system.weights * ((an.jacobians(V0, X, clip.faces) - Jn) ** 2).sum((-1, -2))
    ).sum()
    d = torch.randn(W.shape, generator=gen, dtype=F64)
    d = d - d.mean(0)  # keep the centroid
    assert obj(W) < obj(W + 1e-3 * d)


def test_arap_deformation_of_rigidly_moved_handles_is_the_rigid_motion(clip):
    V0 = clip.vertices.double()
    system = an.PoissonSystem(V0, clip.faces, clip.handles)
    R, b = an.rotation(torch.tensor(2.0, dtype=F64)), torch.tensor([0.3, -0.1], dtype=F64)
    V, J = an.arap_deform(clip, system, clip.keypoints.double() @ R.T + b)
    assert torch.allclose(V, V0 @ R.T + b, atol=1e-9)
    # a non-rigid pose (one arm raised) is deformed, rigid piece by piece: small ARAP energy
    kp = clip.keypoints.double().clone()
    kp[4] = kp[3] + an.rotation(torch.tensor(1.5, dtype=F64)) @ (kp[4] - kp[3])
    V, J = an.arap_deform(clip, system, kp, iters=6)
    assert (V[clip.handles] - kp).abs().max() < 0.02
    assert an.arap_energy(J, system.weights) < 0.05


def test_jacobian_ode_relaxes_to_the_pose_and_its_correction_starts_at_zero():
    tau = torch.linspace(0, 1, 11)
    pose = torch.eye(2).expand(11, 5, 2, 2).clone()
    pose[5:] *= 1.5  # a jump in the pose: J follows with the lag 1 / kappa
    ode = an.JacobianODE(16, kappa=8.0)
    J = ode(pose, tau).detach()
    assert torch.allclose(J[:5], pose[:5], atol=1e-6)
    exact = 1.5 - 0.5 * torch.exp(-8.0 * (tau[-1] - tau[4]))  # the linear ODE, from tau_4
    assert abs(float(J[-1, 0, 0, 0]) - float(exact)) < 0.06  # the pose is linear between frames
    assert 1.0 < float(J[5, 0, 0, 0]) < 1.5  # smoothed: not the pose's jump


def test_soft_rasterizer_covers_the_mesh_and_passes_gradients_to_vertices(clip):
    V = clip.vertices.double().requires_grad_(True)
    img = an.soft_rasterize(V, clip.faces, 24, 0.02)
    centre = an.pixel_grid(24, (-1.2, 1.2, -1.2, 1.2)).double()
    mid_spine = (clip.keypoints[1] + clip.keypoints[2]).double() / 2
    inside = (centre - mid_spine).norm(dim=1).argmin()
    assert img.reshape(-1)[inside] > 0.9 and img[0, 0] < 1e-3  # a corner is empty
    img.sum().backward()
    assert torch.isfinite(V.grad).all() and V.grad.abs().sum() > 0
    gen = torch.Generator().manual_seed(4)
    d = torch.randn(V.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        fd = (
            an.soft_rasterize(V + 1e-6 * d, clip.faces, 24, 0.02).sum()
            - an.soft_rasterize(V - 1e-6 * d, clip.faces, 24, 0.02).sum()
        ) / 2e-6
    assert torch.isclose(fd, (V.grad * d).sum(), rtol=1e-5)


def test_cliparts_are_valid_meshes_with_handles_at_the_keypoints():
    for name in an.CHARACTERS:
        c = an.make_clipart(name, 0.08)
        assert (an.areas(c.vertices, c.faces) > 0).all()
        assert torch.allclose(c.vertices[c.handles], c.keypoints)
        assert c.bone_of.shape[0] == c.faces.shape[0]
    with pytest.raises(ValueError, match="clipart"):
        an.make_clipart("dragon")


def test_jerk_and_skeleton_error_of_known_motions():
    x = torch.zeros(5, 3, 2)
    x[:, :, 0] = torch.arange(5.0)[:, None] ** 2  # constant acceleration 2
    assert torch.allclose(an.jerk(x), torch.tensor(2.0))
    kp = an.make_clipart("stick", 0.1).keypoints
    assert an.skeleton_length_error(kp * 1.1, kp) == pytest.approx(0.1, abs=1e-5)
    assert an.skeleton_loss(kp * 1.1, kp) == pytest.approx(0.01, abs=1e-6)

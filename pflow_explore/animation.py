"""Clipart animation geometry (chapter 10, FlexiClip): cubic Bezier keypoint trajectories,
a triangle mesh of a stick-figure clipart, per-triangle Jacobians, ARAP energy and ARAP
deformation from keypoint handles, Poisson recovery of vertices from Jacobians, a neural
ODE over Jacobians in continuous time, and a soft rasterizer, all in torch.

- Bezier: p_k(tau) = sum_i C(3, i) (1 - tau)^(3 - i) tau^i P_{k,i}, its derivatives exact
  (the derivative of a degree-n curve is the degree-(n - 1) curve of n (P_{i+1} - P_i)).
- Jacobian of triangle T: J_T = E_T(V) E_T(V_rest)^{-1}, E = [v1 - v0, v2 - v0] (2x2):
  the linear map taking the rest triangle to the deformed one.
- ARAP energy: sum_T |T| ||J_T - R(J_T)||_F^2 / sum_T |T|, R the closest rotation
  (in 2D the angle atan2(J10 - J01, J00 + J11)): zero exactly for rigid motions.
- Poisson recovery: V = argmin sum_T |T| ||grad_T V - J_T||^2 + anchor, a linear
  least-squares problem with a fixed matrix (Cholesky once, then a solve per frame).
- ARAP deformation: local (R_T = R(J_T)) / global (Poisson with R as target Jacobians and
  the keypoints as soft handles) iterations, started from each triangle's bone rotation.
- :class:`JacobianODE`: dJ/dtau = kappa (J^pose(tau) - J) + g_phi(J, J^pose(tau), c(tau), tau),
  integrated with torchdiffeq; c(tau) a causal, learned-decay average of earlier frames' pose
  Jacobians (a one-head stand-in for the paper's attention). This is what the FlexiClip
  paper calls "pfODE" modelling: a neural ODE over Jacobians, not a probability-flow ODE.
- :func:`soft_rasterize`: per-pixel coverage sigmoid(signed edge distance / sigma) per
  triangle, united as 1 - prod(1 - c); differentiable in the vertices.

Shapes: vertices (..., N, 2), faces (T, 3) long, Jacobians (..., T, 2, 2).
Time convention: physical time of the animation: clip time tau in [0, 1], tau_f = f / (F - 1),
tau = 0 the rest clipart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pflow_explore.datasets.motions import BONES, rest_pose

# ---- Bezier trajectories ----------------------------------------------------------------


def bernstein(n: int, tau: Tensor) -> Tensor:
    """Bernstein basis (F, n + 1): B_i(tau) = C(n, i) (1 - tau)^(n - i) tau^i."""
    i = torch.arange(n + 1, dtype=tau.dtype)
    comb = torch.tensor([math.comb(n, k) for k in range(n + 1)], dtype=tau.dtype)
    t = tau[:, None]
    return comb * (1 - t) ** (n - i) * t**i


def bezier(P: Tensor, tau: Tensor, order: int = 0) -> Tensor:
    """The Bezier curve of control points P (..., n + 1, 2) at tau (F,), or its
    ``order``-th derivative d^k p / d tau^k, exactly: (..., F, 2)."""
    for _ in range(order):
        P = (P.shape[-2] - 1) * (P[..., 1:, :] - P[..., :-1, :])
    if P.shape[-2] == 0:
        return torch.zeros(*P.shape[:-2], len(tau), 2, dtype=P.dtype)
    return torch.einsum("fi,...id->...fd", bernstein(P.shape[-2] - 1, tau.to(P.dtype)), P)


def still_controls(points: Tensor) -> Tensor:
    """Cubic control points (K, 4, 2) of keypoints that stay at ``points`` (K, 2)."""
    return points[:, None, :].repeat(1, 4, 1).clone()


# ---- the clipart mesh --------------------------------------------------------------------
@dataclass
class Clipart:
    """A stick-figure clipart: rest vertices (N, 2), faces (T, 3), keypoints (K, 2),
    handle vertex of each keypoint (K,), bone of each triangle (T,)."""

    name: str
    vertices: Tensor
    faces: Tensor
    keypoints: Tensor
    handles: Tensor
    bone_of: Tensor


CHARACTERS = {  # name -> (bone length scale, limb half-width, torso half-width, head radius)
    "stick": (1.0, 0.04, 0.07, 0.12),
    "chubby": (0.95, 0.07, 0.15, 0.13),
    "kid": (0.8, 0.05, 0.09, 0.17),
}


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    s = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
    return np.linalg.norm(p - (a + s[:, None] * ab), axis=1)


def make_clipart(name: str = "stick", spacing: float = 0.06) -> Clipart:
    """The mesh of a thickened skeleton: points along each bone (centre line and both sides,
    ``spacing`` apart) and rings for the head, triangulated by Delaunay; a triangle is kept
    when its centroid lies inside a thickened bone or the head disc."""
    from scipy.spatial import Delaunay  # not at package import

    if name not in CHARACTERS:
        raise ValueError(f"clipart must be one of {list(CHARACTERS)}, got {name!r}")
    if not 0.005 <= spacing <= 0.2:
        raise ValueError(f"spacing must lie in [0.005, 0.2], got {spacing}")
    scale, limb, torso, head = CHARACTERS[name]
    from pflow_explore.datasets.motions import LENGTHS

    kp = rest_pose(torch.tensor(LENGTHS) * scale).double().numpy()
    kp[0] = kp[1] + (kp[0] - kp[1]) * (head + 0.02) / np.linalg.norm(kp[0] - kp[1])
    widths = [head * 0.5 if b == 0 else torso if b == 1 else limb for b in range(len(BONES))]
    pts = [kp]
    for b, (p, c) in enumerate(BONES):
        a, e = kp[p], kp[c]
        d = e - a
        length = np.linalg.norm(d)
        normal = np.array([-d[1], d[0]]) / length
        m = max(2, int(np.ceil(length / spacing)))
        s = np.linspace(0, 1, m + 1)[:, None]
        for off in np.linspace(-1, 1, max(2, int(np.ceil(2 * widths[b] / spacing)) + 1)):
            pts.append(a + s * d + off * widths[b] * normal)
    for r in np.arange(head, 0, -spacing):
        k = max(6, int(2 * np.pi * r / spacing))
        ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
        pts.append(kp[0] + r * np.stack([np.cos(ang), np.sin(ang)], 1))
    pts = np.concatenate(pts)
    keep = [0]  # drop near-duplicates (keypoints first, so they survive)
    for i in range(1, len(pts)):
        if np.min(np.linalg.norm(pts[keep] - pts[i], axis=1)) > spacing / 3:
            keep.append(i)
    pts = pts[keep]
    tri = Delaunay(pts).simplices
    cen = pts[tri].mean(1)
    dist = np.stack(
        [_segment_distance(cen, kp[p], kp[c]) - widths[b] * 1.05 for b, (p, c) in enumerate(BONES)],
        1,
    )
    in_head = np.linalg.norm(cen - kp[0], axis=1) < head * 1.02
    e1, e2 = pts[tri[:, 1]] - pts[tri[:, 0]], pts[tri[:, 2]] - pts[tri[:, 0]]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    ok = ((dist.min(1) < 0) | in_head) & (np.abs(area) > 1e-3 * spacing**2)
    tri, dist, area, in_head = tri[ok], dist[ok], area[ok], in_head[ok]
    tri[area < 0] = tri[area < 0][:, [0, 2, 1]]  # counter-clockwise
    used = np.unique(tri)
    remap = -np.ones(len(pts), dtype=np.int64)
    remap[used] = np.arange(len(used))
    bone_of = np.where(in_head, 0, dist.argmin(1))
    return Clipart(
        name,
        torch.tensor(pts[used], dtype=torch.float32),
        torch.tensor(remap[tri], dtype=torch.long),
        torch.tensor(kp, dtype=torch.float32),
        torch.tensor(remap[: len(kp)], dtype=torch.long),
        torch.tensor(bone_of, dtype=torch.long),
    )


# ---- Jacobians and distortion ------------------------------------------------------------
def edges(V: Tensor, faces: Tensor) -> Tensor:
    """E = [v1 - v0, v2 - v0] per triangle, (..., T, 2, 2) (columns are edges)."""
    v = V[..., faces, :]  # (..., T, 3, 2)
    return torch.stack([v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :]], -1)


def det2(A: Tensor) -> Tensor:
    """det of 2x2 matrices (..., 2, 2) -> (...), written out (batched 2x2 linear algebra
    is dominated by call overhead in torch)."""
    return A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] * A[..., 1, 0]


def inv2(A: Tensor) -> Tensor:
    """Inverse of 2x2 matrices (..., 2, 2), written out: adj(A) / det(A)."""
    adj = torch.stack(
        [
            torch.stack([A[..., 1, 1], -A[..., 0, 1]], -1),
            torch.stack([-A[..., 1, 0], A[..., 0, 0]], -1),
        ],
        -2,
    )
    return adj / det2(A)[..., None, None]


def matmul2(A: Tensor, B: Tensor) -> Tensor:
    """A @ B for stacks of 2x2 matrices, by broadcasting (faster than bmm at this size)."""
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def areas(V: Tensor, faces: Tensor) -> Tensor:
    """Signed triangle areas (..., T): det(E) / 2."""
    return det2(edges(V, faces)) / 2


def jacobians(V_rest: Tensor, V: Tensor, faces: Tensor) -> Tensor:
    """J_T = E_T(V) E_T(V_rest)^{-1}, (..., T, 2, 2)."""
    return matmul2(edges(V, faces), inv2(edges(V_rest.to(V.dtype), faces)))


def rotation(angle: Tensor) -> Tensor:
    """2D rotation matrices (..., 2, 2) of ``angle`` (...)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def closest_rotation(J: Tensor) -> Tensor:
    """argmin_R ||J - R||_F over rotations, (..., 2, 2): the angle atan2(J10 - J01, J00 + J11)."""
    return rotation(torch.atan2(J[..., 1, 0] - J[..., 0, 1], J[..., 0, 0] + J[..., 1, 1]))


def arap_energy(J: Tensor, weights: Tensor) -> Tensor:
    """sum_T w_T ||J_T - R(J_T)||_F^2 / sum_T w_T, (...): 0 iff every J_T is a rotation."""
    e = ((J - closest_rotation(J)) ** 2).sum((-1, -2))
    return (e * weights).sum(-1) / weights.sum()


def area_distortion(J: Tensor, weights: Tensor) -> Tensor:
    """sum_T w_T |log det J_T| / sum_T w_T, (...): 0 iff every triangle keeps its area
    (a flipped triangle counts as det clamped at 1e-3)."""
    return (torch.log(det2(J).clamp_min(1e-3)).abs() * weights).sum(-1) / weights.sum()


# ---- Poisson recovery and ARAP deformation -----------------------------------------------
class PoissonSystem:
    """V = argmin_V sum_T |T| ||J_T(V) - J_T||_F^2 + w sum_k ||v_{h_k} - q_k||^2 (handles
    h, targets q), or, without handles, with the centroid pinned: mean(V) = c.

    J_T(V) = V_T^T D_T is linear in V (D_T = [[-1, -1], [1, 0], [0, 1]] E_rest^{-1}), so the
    normal equations have one matrix A = G^T W G + anchor, factored once (float64)."""

    def __init__(
        self,
        V_rest: Tensor,
        faces: Tensor,
        handles: Tensor | None = None,
        handle_weight: float = 10.0,
    ) -> None:
        V_rest = V_rest.double()
        n, t = V_rest.shape[0], faces.shape[0]
        S = torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        D = S @ torch.linalg.inv(edges(V_rest, faces))  # (T, 3, 2)
        G = torch.zeros(t, 2, n, dtype=torch.float64)  # row (T, k): column k of J_T, as V^T
        rows = torch.arange(t)[:, None].expand(t, 3)
        for k in range(2):
            G[:, k].index_put_(
                (rows.reshape(-1), faces.reshape(-1)), D[:, :, k].reshape(-1), accumulate=True
            )
        self.G = G.reshape(2 * t, n)
        self.weights = areas(V_rest, faces).abs()
        w = self.weights.repeat_interleave(2)
        A = self.G.T @ (w[:, None] * self.G)
        self.handles, self.handle_weight = handles, handle_weight * float(self.weights.sum())
        if handles is None:
            A = A + torch.full((n, n), 1.0 / n**2, dtype=torch.float64)
        else:
            A[handles, handles] += self.handle_weight
        self.n, self.w = n, w
        self.chol = torch.linalg.cholesky(A)
        # the solution is linear in (J, anchor): precompute both operators, so a solve is
        # two matrix products (a Cholesky solve per frame costs far more at this size)
        self.from_jacobians = torch.cholesky_solve(self.G.T * w, self.chol)  # (N, 2T)
        if handles is None:
            anchor = torch.full((n, 1), 1.0 / n, dtype=torch.float64)
        else:
            anchor = torch.zeros(n, len(handles), dtype=torch.float64)
            anchor[handles, torch.arange(len(handles))] = self.handle_weight
        self.from_anchor = torch.cholesky_solve(anchor, self.chol)  # (N, 1) or (N, K)
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor]] = {}

    def solve(self, J: Tensor, anchor: Tensor) -> Tensor:
        """Vertices (..., N, 2) from Jacobians J (..., T, 2, 2) and the anchor: handle
        targets (..., K, 2) with handles, else the centroid (..., 2)."""
        if J.dtype not in self._cast:
            self._cast[J.dtype] = (self.from_jacobians.to(J.dtype), self.from_anchor.to(J.dtype))
        MJ, MA = self._cast[J.dtype]
        Jt = J.transpose(-1, -2).reshape(*J.shape[:-3], -1, 2)  # rows = J_T^T rows
        anchor = anchor.to(J.dtype)
        if self.handles is None:
            anchor = anchor[..., None, :]
        return _apply(MJ, Jt) + _apply(MA, anchor)


def _apply(M: Tensor, X: Tensor) -> Tensor:
    """M @ X for M (N, m) and X (..., m, 2): one matrix product for the whole batch."""
    lead = X.shape[:-2]
    flat = X.reshape(-1, *X.shape[-2:]).movedim(0, -2).reshape(X.shape[-2], -1)  # (m, B * 2)
    out = (M @ flat).reshape(M.shape[0], -1, 2).movedim(-2, 0)  # (B, N, 2)
    return out.reshape(*lead, M.shape[0], 2)


def bone_angles(keypoints: Tensor) -> Tensor:
    """The world angle of each bone of :data:`BONES`, (..., B), from keypoints (..., K, 2)."""
    d = torch.stack([keypoints[..., c, :] - keypoints[..., p, :] for p, c in BONES], -2)
    return torch.atan2(d[..., 1], d[..., 0])


def arap_deform(
    clip: Clipart,
    system: PoissonSystem,
    targets: Tensor,
    iters: int = 4,
) -> tuple[Tensor, Tensor]:
    """ARAP with the keypoints as soft handles: (vertices (..., N, 2), pose Jacobians
    (..., T, 2, 2)) for keypoint targets (..., K, 2). Starts from each triangle's bone
    rotation, then ``iters`` local/global steps (R_T = R(J_T); Poisson with R as target)."""
    turn = bone_angles(targets) - bone_angles(clip.keypoints.to(targets.dtype))
    R = rotation(turn[..., clip.bone_of])
    V = system.solve(R, targets)
    for _ in range(iters):
        R = closest_rotation(jacobians(clip.vertices, V, clip.faces))
        V = system.solve(R, targets)
    return V, jacobians(clip.vertices, V, clip.faces)


def skeleton_length_error(keypoints: Tensor, rest: Tensor) -> Tensor:
    """Mean over bones of |length / rest length - 1|, (...) for keypoints (..., K, 2)."""
    length = lambda x: torch.stack(
        [(x[..., c, :] - x[..., p, :]).norm(dim=-1) for p, c in BONES], -1
    )
    return (length(keypoints) / length(rest) - 1).abs().mean(-1)


def skeleton_loss(keypoints: Tensor, rest: Tensor) -> Tensor:
    """Mean over bones of (length / rest length - 1)^2, (...): the optimisation's skeleton
    term (squared, so its gradient vanishes at the right lengths; an absolute value keeps a
    gradient of fixed size there, whose sign flips every step under Adam and drowns the
    score-distillation signal)."""
    length = lambda x: torch.stack(
        [(x[..., c, :] - x[..., p, :]).norm(dim=-1) for p, c in BONES], -1
    )
    return ((length(keypoints) / length(rest) - 1) ** 2).mean(-1)


def jerk(x: Tensor) -> Tensor:
    """Mean ||x_{f+1} - 2 x_f + x_{f-1}|| over frames and points, (...) for x (..., F, P, 2)
    (the card's "jerk": the second difference in time)."""
    return (
        (x[..., 2:, :, :] - 2 * x[..., 1:-1, :, :] + x[..., :-2, :, :]).norm(dim=-1).mean((-1, -2))
    )


# ---- temporal Jacobians ------------------------------------------------------------------
class JacobianODE(nn.Module):
    """dJ/dtau = kappa (J^pose(tau) - J) + g_phi(J, J^pose(tau), c(tau), tau), per triangle.

    J^pose(tau): the frames' pose Jacobians (F, T, 2, 2) linearly interpolated in tau;
    c(tau) = sum_{tau_f <= tau} e^{-(tau - tau_f)/l} J^pose_f / sum e^{...}, a causal average of
    earlier frames with a learned decay l (the attention over earlier frames, one head).
    kappa relaxes J towards the pose (a low-pass filter of the pose in time); g_phi, an MLP
    on the 13 numbers of each triangle whose last layer starts at zero, corrects it."""

    def __init__(self, hidden: int = 32, kappa: float = 8.0) -> None:
        super().__init__()
        self.kappa = kappa
        self.log_decay = nn.Parameter(torch.tensor(math.log(0.2)))
        self.g = nn.Sequential(
            nn.Linear(13, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 4),
        )
        nn.init.zeros_(self.g[-1].weight)
        nn.init.zeros_(self.g[-1].bias)

    def field(self, pose: Tensor, tau: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """f(tau, J) for torchdiffeq, pose (F, T, 2, 2) on the grid tau (F,)."""
        F = len(tau)

        def f(t: Tensor, J: Tensor) -> Tensor:
            t = t.clamp(tau[0], tau[-1])  # dopri probes outside the grid
            pos = (t - tau[0]) / (tau[-1] - tau[0]) * (F - 1)
            i = pos.floor().long().clamp(max=F - 2)
            a = pos - i
            Jp = (1 - a) * pose[i] + a * pose[i + 1]
            lag = (t - tau).clamp_min(0) / self.log_decay.exp()
            w = torch.where(tau <= t + 1e-9, torch.exp(-lag), torch.zeros_like(lag))
            ctx = ((w / w.sum()) @ pose.reshape(F, -1)).reshape(pose.shape[1:])
            feats = torch.cat(
                [J.flatten(-2), Jp.flatten(-2), ctx.flatten(-2), t.expand(J.shape[0], 1)], -1
            )
            return self.kappa * (Jp - J) + self.g(feats).reshape(J.shape)

        return f

    def forward(self, pose: Tensor, tau: Tensor, method: str = "rk4") -> Tensor:
        """J(tau_f) for every frame, (F, T, 2, 2), from J(0) = J^pose(0)."""
        from torchdiffeq import odeint

        return odeint(self.field(pose, tau), pose[0], tau, method=method)


# ---- soft rasterizer ---------------------------------------------------------------------
def pixel_grid(size: int, extent: tuple[float, float, float, float]) -> Tensor:
    """Pixel centres (size * size, 2) over extent (x0, x1, y0, y1), row 0 at the top."""
    x0, x1, y0, y1 = extent
    xs = x0 + (torch.arange(size) + 0.5) * (x1 - x0) / size
    ys = y1 - (torch.arange(size) + 0.5) * (y1 - y0) / size
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def soft_rasterize(
    V: Tensor,
    faces: Tensor,
    size: int = 32,
    sigma: float = 0.01,
    extent: tuple[float, float, float, float] = (-1.2, 1.2, -1.2, 1.2),
) -> Tensor:
    """Soft coverage image (size, size) in [0, 1] of the mesh V (N, 2): per triangle
    c_T(p) = prod_edges sigmoid(d_e(p) / sigma), d_e the signed distance to edge e (positive
    inside), then 1 - prod_T (1 - c_T). Differentiable in V."""
    p = pixel_grid(size, extent).to(V.dtype)
    v = V[faces]  # (T, 3, 2)
    a, b = v, v.roll(-1, dims=1)
    e = b - a
    orient = torch.sign(areas(V, faces))[:, None]  # counter-clockwise: inside is on the left
    cross = e[None, :, :, 0] * (p[:, None, None, 1] - a[None, :, :, 1]) - e[None, :, :, 1] * (
        p[:, None, None, 0] - a[None, :, :, 0]
    )
    d = orient * cross / e.norm(dim=-1).clamp_min(1e-9)  # (P, T, 3)
    cover = torch.sigmoid(d / sigma).prod(-1)
    return (1 - torch.exp(torch.log1p(-cover.clamp(max=1 - 1e-6)).sum(-1))).reshape(size, size)

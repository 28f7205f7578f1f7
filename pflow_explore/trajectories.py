"""How straight sampled paths are, and which of them cross (rectified flow, docs/papers.md §03).

A trajectory is a tensor (T + 1, n, d), time first as :mod:`pflow_explore.solvers` returns
it, at times (T + 1,) (strictly monotone). Straightness (Liu et al. 2022, docs/papers.md):

    S(Z) = int_0^1 E |(Z_1 - Z_0) - dZ_t/dt|^2 dt,

0 exactly when every path is a straight line run at constant speed (then one Euler step
is exact). On a general interval [t_0, t_T] the chord velocity (Z_T - Z_0) / (t_T - t_0)
replaces Z_1 - Z_0 and the integral runs over that interval.

- :func:`straightness`: from a sampled path alone (finite differences; see its bias);
- :func:`straightness_of_field`: from a velocity field, integrating it with rk4 and
  evaluating it on the path (more accurate: no differencing);
- :func:`crossings`, :func:`crossing_count`: pairs of 2D paths whose piecewise-linear
  curves intersect.

Time convention: the caller's (paths are taken at the times given).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore.solvers import Field, check_times, odeint

F64 = torch.float64

# elements of one (pairs, T, T) block in crossings(): ~ 32 MB per float64 temporary
CROSSING_BLOCK = 1 << 22


def _trajectory(trajectory: Tensor, name: str = "trajectory") -> Tensor:
    x = torch.as_tensor(trajectory)
    if x.dim() < 3 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"{name} must be (T + 1, n, d) with T >= 1 and n >= 1, got {tuple(x.shape)}"
        )
    x = x.detach().to(F64).reshape(x.shape[0], x.shape[1], -1)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values (did the sampler diverge?)")
    return x


def _times(times: Tensor | None, length: int, device: torch.device) -> Tensor:
    if times is None:
        return torch.linspace(0.0, 1.0, length, dtype=F64, device=device)
    t = check_times(times).to(dtype=F64, device=device)
    if t.shape != (length,):
        raise ValueError(
            f"times must have shape (T + 1,) = ({length},), one per trajectory step, "
            f"got {tuple(t.shape)}"
        )
    return t


def path_straightness(trajectory: Tensor, times: Tensor | None = None) -> Tensor:
    """Per-path discrete straightness, (n,) float64; :func:`straightness` is its mean.

    trajectory: (T + 1, n, d) (or (T + 1, n, ...), flattened); times: (T + 1,), default
    an even grid on [0, 1]. With v_k = (Z_{k+1} - Z_k) / dt_k and the chord velocity
    vbar = (Z_T - Z_0) / (t_T - t_0):  S_j = sum_k |dt_k| |vbar_j - v_{k,j}|^2.
    """
    x = _trajectory(trajectory)
    t = _times(times, x.shape[0], x.device)
    dt = t.diff()  # (T,), negative on a decreasing grid
    v = x.diff(dim=0) / dt[:, None, None]  # (T, n, d)
    chord = (x[-1] - x[0]) / (t[-1] - t[0])  # (n, d)
    return (dt.abs()[:, None] * ((chord - v) ** 2).sum(-1)).sum(0)


def straightness(trajectory: Tensor, times: Tensor | None = None) -> float:
    """Straightness S of sampled paths, estimated by finite differences; a float.

    trajectory: (T + 1, n, d); times: (T + 1,) (default: an even grid on [0, 1]).

        S_hat = (1/n) sum_j sum_k |dt_k| |vbar_j - (Z_{k+1,j} - Z_{k,j}) / dt_k|^2,
        vbar_j = (Z_{T,j} - Z_{0,j}) / (t_T - t_0).

    Bias: S_hat is *exactly* the straightness of the piecewise-linear path through the
    samples (for an Euler sampler, the path it actually takes). For a smooth path sampled at
    these times it underestimates: on each step the difference quotient v_k is the mean of
    dZ/dt, so S = S_hat + sum_k int_step |dZ/dt - v_k|^2 dt >= S_hat, a gap of about
    sum_k dt_k^3 E|Z''|^2 / 12 = O(max dt^2). Use fine grids (or
    :func:`straightness_of_field`) for the continuous S.
    """
    return float(path_straightness(trajectory, times).mean())


def straightness_of_field(
    v: Field, z0: Tensor, n_steps: int = 64, t0: float = 0.0, t1: float = 1.0
) -> float:
    """Straightness of the flow of v from z0, S = int E|(Z_1 - Z_0) - v(Z_t, t)|^2 dt.

    v(x (n, d), t (0-d tensor)) -> (n, d); z0: (n, d). The path is integrated with rk4 on
    ``n_steps`` even steps from t0 to t1 (t0 = 0 noise, t1 = 1 data in the rectified-flow
    convention), dZ/dt is v itself evaluated on the path (no differencing), and the time
    integral is composite Simpson (n_steps even; the trapezoid rule if odd). Errors:
    O(h^4) from rk4 and Simpson, h = |t1 - t0| / n_steps. Costs 5 n_steps + 1 evaluations.
    Returns the mean over the n paths, a float.
    """
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    n_steps = int(n_steps)
    z0 = torch.as_tensor(z0)
    if z0.dim() != 2:
        raise ValueError(f"z0 must be (n, d), got shape {tuple(z0.shape)}")
    dtype = z0.dtype if z0.is_floating_point() else F64
    z0 = z0.to(dtype)
    times = torch.linspace(float(t0), float(t1), n_steps + 1, dtype=dtype, device=z0.device)
    times = check_times(times)
    with torch.no_grad():
        path = odeint(v, z0, times, method="rk4", trajectory=True).trajectory
        velocity = torch.stack([v(path[k], times[k]) for k in range(n_steps + 1)])
    chord = (path[-1] - path[0]).to(F64) / (float(t1) - float(t0))
    f = ((chord - velocity.to(F64)) ** 2).sum(-1).mean(-1)  # (n_steps + 1,)
    h = abs(float(t1) - float(t0)) / n_steps
    if n_steps % 2 == 0:
        weights = torch.ones(n_steps + 1, dtype=F64, device=f.device)
        weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
        return float(h / 3 * (weights * f).sum())
    return float(h * (f.sum() - 0.5 * (f[0] + f[-1])))


def _sides(ab: Tensor, k: Tensor, p: Tensor) -> Tensor:
    """(b - a) x (p - a) as ab x p - ab x a, with k = ab x a precomputed; shapes broadcast.

    > 0 when p lies left of the directed line a -> b. Written so that the big broadcast
    (segments of one path against those of the other) costs two products, not a difference
    of points first.
    """
    return ab[..., 0] * p[..., 1] - ab[..., 1] * p[..., 0] - k


def _opposite(o1: Tensor, o2: Tensor, tol: float) -> Tensor:
    """Strictly opposite sides: one orientation > tol, the other < -tol."""
    return ((o1 > tol) & (o2 < -tol)) | ((o1 < -tol) & (o2 > tol))


def _segments_cross(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tol: float) -> Tensor:
    """Whether segment ab properly crosses segment cd (interiors meet in one point).

    c and d lie strictly on opposite sides of line ab, and a and b of line cd.
    Orientations within ``tol`` of 0 count as 0, so touching end points, a shared end point
    (all 1-RF one-step paths end at mu) and collinear overlaps are not crossings.
    """
    ab, cd = b - a, d - c
    k_ab = ab[..., 0] * a[..., 1] - ab[..., 1] * a[..., 0]
    k_cd = cd[..., 0] * c[..., 1] - cd[..., 1] * c[..., 0]
    first = _opposite(_sides(ab, k_ab, c), _sides(ab, k_ab, d), tol)
    return first & _opposite(_sides(cd, k_cd, a), _sides(cd, k_cd, b), tol)


def _block_boxes(start: Tensor, end: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Segments (n, T, 2) padded to whole blocks of ``size`` and each block's bounding box.

    Padding repeats the last point: a zero-length segment never properly crosses anything.
    Returns start, end (n, nb * size, 2) and lo, hi (n, nb, 2).
    """
    n, steps, _ = start.shape
    nb = -(-steps // size)
    pad = nb * size - steps
    if pad:
        last = end[:, -1:].expand(n, pad, 2)
        start, end = torch.cat([start, last], 1), torch.cat([end, last], 1)
    pts = torch.stack([start, end], 2).reshape(n, nb, size * 2, 2)
    return start, end, pts.amin(2), pts.amax(2)


def crossings(
    trajectory: Tensor, same_step: bool = False, rtol: float = 1e-9, block: int = CROSSING_BLOCK
) -> Tensor:
    """Index pairs (i, j), i < j, of 2D paths whose piecewise-linear curves cross; (k, 2) long.

    trajectory: (T + 1, n, 2); path j is the polyline Z_0j, ..., Z_Tj. By default a pair
    crosses when any segment of one properly intersects any segment of the other (the
    curves cross in the plane, at whatever times: what a picture of paths shows).
    ``same_step=True`` only compares segments of the same step k (the paths cross while
    both are in step k): T tests per pair. Orientation tests in float64 with tolerance
    rtol * (coordinate span)^2; touching ends and shared end points do not count.

    Cost: pairs whose bounding boxes miss are skipped; for the any-segment test, paths
    are cut into blocks of 8 segments and only blocks whose boxes overlap are compared
    segment by segment (worst case n^2 T^2 / 2 tests). Work runs in chunks of about
    ``block`` elements. Sorted by (i, j).
    """
    x = _trajectory(trajectory)
    if x.shape[2] != 2:
        raise ValueError(f"trajectory must be (T + 1, n, 2) for crossings, got {tuple(x.shape)}")
    steps, n = x.shape[0] - 1, x.shape[1]
    span = float((x.amax(dim=(0, 1)) - x.amin(dim=(0, 1))).max())
    tol = rtol * max(span, 1e-300) ** 2
    lo, hi = x.amin(0), x.amax(0)  # (n, 2) bounding boxes
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    overlap = ((lo[i] <= hi[j]) & (lo[j] <= hi[i])).all(-1)
    i, j = i[overlap], j[overlap]
    start, end = x[:-1].transpose(0, 1), x[1:].transpose(0, 1)  # (n, T, 2)
    if same_step:
        crossed = torch.zeros(len(i), dtype=torch.bool, device=x.device)
        chunk = max(1, block // steps)
        for s in range(0, len(i), chunk):
            ii, jj = i[s : s + chunk], j[s : s + chunk]
            hit = _segments_cross(start[ii], end[ii], start[jj], end[jj], tol)  # (P, T)
            crossed[s : s + chunk] = hit.any(-1)
        return torch.stack([i[crossed], j[crossed]], dim=1).cpu()
    size = min(steps, 8)
    start, end, blo, bhi = _block_boxes(start, end, size)
    nb = blo.shape[1]
    crossed = torch.zeros(len(i), dtype=torch.bool, device=x.device)
    chunk = max(1, block // (nb * nb))
    for s in range(0, len(i), chunk):
        ii, jj = i[s : s + chunk], j[s : s + chunk]
        meet = (
            (blo[ii][:, :, None] <= bhi[jj][:, None]) & (blo[jj][:, None] <= bhi[ii][:, :, None])
        ).all(-1)  # (P, nb, nb): block of path i vs block of path j
        p, bi, bj = meet.nonzero(as_tuple=True)
        sub = max(1, block // (size * size))
        for q in range(0, len(p), sub):
            pp, ki, kj = p[q : q + sub], bi[q : q + sub], bj[q : q + sub]
            seg_i = ki[:, None] * size + torch.arange(size, device=x.device)  # (K, size)
            seg_j = kj[:, None] * size + torch.arange(size, device=x.device)
            a = start[ii[pp][:, None], seg_i][:, :, None]  # (K, size, 1, 2)
            b = end[ii[pp][:, None], seg_i][:, :, None]
            c = start[jj[pp][:, None], seg_j][:, None]  # (K, 1, size, 2)
            d = end[jj[pp][:, None], seg_j][:, None]
            hit = _segments_cross(a, b, c, d, tol).flatten(1).any(-1)
            crossed[s + pp[hit]] = True
    return torch.stack([i[crossed], j[crossed]], dim=1).cpu()


def crossing_count(trajectory: Tensor, same_step: bool = False) -> int:
    """Number of crossing pairs of 2D paths (T + 1, n, 2); see :func:`crossings`."""
    return int(crossings(trajectory, same_step=same_step).shape[0])

"""Stationary states, probability flows and entropy production of linear SDEs (docs/papers.md §12).

Convention (the NEGATED drift matrix): for a state z in R^n,

    dz = -B z dt + sqrt(2 D) dW,     D diagonal, positive semi-definite.

If every eigenvalue of B has a positive real part, the stationary law is N(0, S) with the
Lyapunov equation B S + S B^T = 2 D; the score is s(z) = -S^{-1} z, the probability velocity

    v(z) = b(z) - D s(z) = (-B + D S^{-1}) z =: M z,

and the entropy production rate over the noisy degrees of freedom I (those with D_jj > 0) is
EPR_I = E[v_I . D_I^{-1} v_I] = sum_{j in I} (M S M^T)_jj / D_jj (docs/papers.md).
Since M S = -B S + D is antisymmetric (add the Lyapunov equation to its transpose),
div v = tr M = tr(M S S^{-1}) = 0 and v . s = 0 pointwise for every linear system; the x- and
g-parts of tr M cancel (docs/papers.md).

Active Ornstein-Uhlenbeck particles are linear with no interaction or with springs. Per
spatial dimension the state is z = (x_1..x_N, g_1..g_N), with

    B = [[A I + k L, -v0 I], [0, gamma I]],   D = diag(eps I, gamma I),

so a d-dimensional isotropic system has d identical copies: d times the per-dimension EPR.
:func:`derivation_trapped_aoup` derives the one-particle case (N = 1, L = 0) with sympy; the
numeric functions solve any such network with scipy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import sympy as sp
import torch
from torch import Tensor

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

# ---- the trapped AOUP in sympy ----------------------------------------------------------------
A_s, v0_s, gamma_s, eps_s = sp.symbols("A v_0 gamma epsilon", positive=True)
x_s, g_s = sp.symbols("x g", real=True)
Sxx, Sxg, Sgg = sp.symbols("S_xx S_xg S_gg", real=True)


@stored
def _trapped_aoup_exprs() -> dict[str, sp.Expr]:
    """The sympy objects of the trapped-AOUP derivation (shared by the Derivation and the
    numerics, so nothing is typed in twice)."""
    B = sp.Matrix([[A_s, -v0_s], [0, gamma_s]])
    D = sp.diag(eps_s, gamma_s)
    S_unknown = sp.Matrix([[Sxx, Sxg], [Sxg, Sgg]])
    lyap = B * S_unknown + S_unknown * B.T
    sol = sp.solve(list(lyap - 2 * D), [Sxx, Sxg, Sgg], dict=True)[0]
    S = S_unknown.subs(sol).applyfunc(sp.factor)
    z = sp.Matrix([x_s, g_s])
    S_inv = S.inv().applyfunc(sp.simplify)
    score = (-S_inv * z).applyfunc(sp.simplify)
    M = (-B + D * S_inv).applyfunc(sp.simplify)  # v = M z
    velocity = (M * z).applyfunc(sp.simplify)
    cov_v = (M * S * M.T).applyfunc(sp.simplify)  # E[v v^T]
    epr_x = sp.simplify(cov_v[0, 0] / eps_s)
    epr_g = sp.factor(sp.simplify(cov_v[1, 1] / gamma_s))
    epr = sp.factor(sp.simplify(epr_x + epr_g))
    return {
        "B": B,
        "D": D,
        "lyapunov": sp.Eq(lyap, 2 * D),
        "S": S,
        "score": score,
        "M": M,
        "velocity": velocity,
        "div_x": sp.simplify(M[0, 0]),
        "div_g": sp.simplify(M[1, 1]),
        "epr_x": epr_x,
        "epr_g": epr_g,
        "epr": epr,
    }


@stored
def derivation_trapped_aoup() -> Derivation:
    """One AOUP in a harmonic trap, per dimension (docs/papers.md): z = (x, g),
    B = [[A, -v0], [0, gamma]], D = diag(eps, gamma).

    Derives S (Lyapunov), s = -S^{-1} z, v = -B z - D s, div v (= 0, x- and g-parts
    cancelling), and EPR = E[v . D^{-1} v] = gamma v0^2 / (eps (A + gamma)) with its g-part
    A gamma v0^2 / (eps (A + gamma)^2 + gamma v0^2); each checked against the paper's form by
    simplifying the difference to 0.
    """
    e = _trapped_aoup_exprs()
    S = e["S"]
    paper_S = (1, v0_s / (A_s + gamma_s), (eps_s + v0_s**2 / (A_s + gamma_s)) / A_s)
    paper_epr = gamma_s * v0_s**2 / (eps_s * (A_s + gamma_s))
    paper_epr_g = A_s * gamma_s * v0_s**2 / (eps_s * (A_s + gamma_s) ** 2 + gamma_s * v0_s**2)
    diff_S = sp.Matrix(
        [sp.simplify(S[1, 1] - paper_S[0]), sp.simplify(S[0, 1] - paper_S[1])]
        + [sp.simplify(S[0, 0] - paper_S[2])]
    )
    epr_sym, epr_g_sym = sp.Symbol(r"\mathrm{EPR}"), sp.Symbol(r"\mathrm{EPR}_g")

    def eq(lhs: sp.Basic, rhs: sp.Basic) -> sp.Eq:  # shown as written, not evaluated to False
        return sp.Eq(lhs, rhs, evaluate=False)

    steps = (
        ("drift matrix B (dz = -B z dt + sqrt(2 D) dW)", eq(sp.Symbol("B"), e["B"])),
        ("diffusion D", eq(sp.Symbol("D"), e["D"])),
        ("Lyapunov equation B S + S B^T = 2 D", eq(e["lyapunov"].lhs, e["lyapunov"].rhs)),
        ("stationary covariance S", eq(sp.Symbol("S"), S)),
        ("paper's form (S_gg, S_xg, S_xx)", sp.Tuple(*paper_S)),
        ("S minus paper's form", diff_S),
        ("score s = -S^-1 z", eq(sp.Symbol("s"), e["score"])),
        ("probability velocity v = -B z - D s", eq(sp.Symbol("v"), e["velocity"])),
        ("v = M z with M", eq(sp.Symbol("M"), e["M"])),
        ("div v: x-part, g-part, total", sp.Tuple(e["div_x"], e["div_g"], e["div_x"] + e["div_g"])),
        ("x-part E[v_x^2] / eps", eq(sp.Symbol(r"\mathrm{EPR}_x"), e["epr_x"])),
        ("g-part E[v_g^2] / gamma", eq(epr_g_sym, e["epr_g"])),
        ("total EPR = E[v . D^-1 v]", eq(epr_sym, e["epr"])),
        ("paper's form of EPR", eq(epr_sym, paper_epr)),
        ("EPR minus paper's form", sp.simplify(e["epr"] - paper_epr)),
        ("paper's form of EPR_g", eq(epr_g_sym, paper_epr_g)),
        ("EPR_g minus paper's form", sp.simplify(e["epr_g"] - paper_epr_g)),
        ("EPR_g as eps -> 0", eq(epr_g_sym, sp.limit(e["epr_g"], eps_s, 0))),
        ("free particle A -> 0", eq(epr_sym, sp.limit(e["epr"], A_s, 0))),
    )
    return Derivation(
        "Trapped AOUP: stationary law and entropy production (per dimension)",
        steps,
        sp.Eq(epr_sym, e["epr"]),
    )


@functools.cache
def _trapped_fn(name: str) -> Callable[..., object]:
    return sp.lambdify((A_s, v0_s, gamma_s, eps_s), _trapped_aoup_exprs()[name], modules="numpy")


def _check(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value}")
    return value


def trapped_aoup_covariance(A: float, v0: float, gamma: float, eps: float) -> np.ndarray:
    """Stationary covariance of (x, g) per dimension, (2, 2): S_gg = 1, S_xg = v0/(A+gamma),
    S_xx = (eps + v0^2/(A+gamma))/A (card; from the sympy derivation). Needs A > 0."""
    args = (
        _check("A", A, True),
        _check("v0", v0),
        _check("gamma", gamma, True),
        _check("eps", eps),
    )
    return np.asarray(_trapped_fn("S")(*args), dtype=np.float64)


def trapped_aoup_epr(A: float, v0: float, gamma: float, eps: float, dim: int = 2) -> float:
    """Total EPR over dim dimensions: dim gamma v0^2 / (eps (A + gamma)) (paper).

    A = 0 gives the free particle dim v0^2 / eps; eps = 0 gives inf (the x-part diverges;
    use :func:`trapped_aoup_epr_g`)."""
    A, v0, eps = _check("A", A), _check("v0", v0), _check("eps", eps)
    gamma = _check("gamma", gamma, True)
    if v0 == 0:
        return 0.0
    if eps == 0:
        return math.inf
    return dim * float(_trapped_fn("epr")(A, v0, gamma, eps))


def trapped_aoup_epr_g(A: float, v0: float, gamma: float, eps: float, dim: int = 2) -> float:
    """g-part of the EPR over dim dimensions: dim A gamma v0^2 / (eps (A+gamma)^2 + gamma v0^2);
    finite at eps = 0, where it equals dim A (paper)."""
    A, v0, eps = _check("A", A), _check("v0", v0), _check("eps", eps)
    gamma = _check("gamma", gamma, True)
    if v0 == 0:
        return 0.0
    return dim * float(_trapped_fn("epr_g")(A, v0, gamma, eps))


# ---- numerics for any linear system -----------------------------------------------------------
def lyapunov_covariance(B: np.ndarray, D: np.ndarray) -> np.ndarray:
    """S solving B S + S B^T = 2 D (dz = -B z dt + sqrt(2D) dW), (n, n), symmetrised.

    Raises if B has an eigenvalue with non-positive real part (no stationary law)."""
    B = np.asarray(B, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1] or D.shape != B.shape:
        raise ValueError(f"B and D must be square of one shape, got {B.shape} and {D.shape}")
    if np.linalg.eigvals(B).real.min() <= 0:
        raise ValueError("B must have eigenvalues with positive real part (a stationary law)")
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)  # solves B S + S B^H = 2 D
    return 0.5 * (S + S.T)


def _noisy(D: np.ndarray, parts: Iterable[int] | None) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    if np.abs(D - np.diag(np.diag(D))).max(initial=0.0) > 0:
        raise ValueError("D must be diagonal")
    idx = np.arange(D.shape[0]) if parts is None else np.asarray(sorted(set(parts)), dtype=int)
    if idx.size and (idx.min() < 0 or idx.max() >= D.shape[0]):
        raise ValueError(f"parts must index 0..{D.shape[0] - 1}, got {idx.tolist()}")
    return idx[np.diag(D)[idx] > 0]


def velocity_matrix(B: np.ndarray, D: np.ndarray, S: np.ndarray) -> np.ndarray:
    """M = -B + D S^{-1}, so that the probability velocity is v(z) = M z, (n, n)."""
    return -np.asarray(B) + np.asarray(D) @ np.linalg.inv(S)


def linear_score(S: np.ndarray | Tensor, z: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """s(z) = -S^{-1} z for z (..., n); numpy or torch in, same out (dtype of z)."""
    if isinstance(z, Tensor):
        S_inv = torch.linalg.inv(torch.as_tensor(S, dtype=torch.float64)).to(z)
        return -z @ S_inv  # S^{-1} is symmetric
    return -np.asarray(z) @ np.linalg.inv(S)


def linear_probability_velocity(
    B: np.ndarray, D: np.ndarray, S: np.ndarray, z: np.ndarray | Tensor
) -> np.ndarray | Tensor:
    """v(z) = -B z - D s(z) = (-B + D S^{-1}) z for z (..., n); numpy or torch, same out.
    (``epr.probability_velocity(drift, diffusion, score)`` is the same v = b - D s for any
    SDE, from a drift and a score at the samples.)"""
    M = velocity_matrix(B, D, S)
    if isinstance(z, Tensor):
        return z @ torch.as_tensor(M.T, dtype=torch.float64).to(z)
    return np.asarray(z) @ M.T


def linear_epr(
    B: np.ndarray, D: np.ndarray, S: np.ndarray, parts: Iterable[int] | None = None
) -> float:
    """EPR_I = E[v_I . D_I^{-1} v_I] = sum_{j in I, D_jj > 0} (M S M^T)_jj / D_jj (paper).

    parts: indices I of z to include (None: all). Degrees of freedom without noise
    (D_jj = 0, e.g. x when eps = 0) never count."""
    idx = _noisy(D, parts)
    M = velocity_matrix(B, D, S)
    cov_v = M @ S @ M.T
    return float(np.sum(np.diag(cov_v)[idx] / np.diag(D)[idx]))


def per_particle_linear_epr(
    B: np.ndarray, D: np.ndarray, S: np.ndarray, N: int, dim: int = 1
) -> np.ndarray:
    """Per-particle EPR, (N,): dim E[v_{x_i}^2 / eps + v_{g_i}^2 / gamma] for the state
    z = (x_1..x_N, g_1..g_N) of one spatial dimension (dim copies for isotropic d-dim).
    Sums to dim * linear_epr(B, D, S)."""
    if B.shape != (2 * N, 2 * N):
        raise ValueError(f"B must be ({2 * N}, {2 * N}) for N = {N} particles, got {B.shape}")
    M = velocity_matrix(B, D, S)
    var_v = np.diag(M @ S @ M.T)
    d = np.diag(np.asarray(D, dtype=np.float64))
    per_dof = np.where(d > 0, var_v / np.where(d > 0, d, 1.0), 0.0)
    return dim * (per_dof[:N] + per_dof[N:])


def divergence_of_velocity(
    B: np.ndarray, D: np.ndarray, S: np.ndarray, parts: Iterable[int] | None = None
) -> float:
    """div v = tr(-B + D S^{-1}) (constant in z for a linear system; 0 in total, paper);
    ``parts`` restricts the trace to those coordinates (e.g. the x-part or the g-part)."""
    M = velocity_matrix(B, D, S)
    idx = np.arange(M.shape[0]) if parts is None else np.asarray(sorted(set(parts)), dtype=int)
    return float(np.trace(M[np.ix_(idx, idx)]))


def covariance_z_score(z: Tensor, S: np.ndarray) -> float:
    """Largest |mean(z z^T) - S| / standard error over the entries, for samples z (n, m) of
    a law with mean 0 and covariance S (m, m): a Monte Carlo check that a simulator samples
    N(0, S). Below ~4.5 for m (m + 1) / 2 entries of an exact sampler (Gaussian tails)."""
    prod = z.double()[:, :, None] * z.double()[:, None, :]  # E[z z^T] = S (mean 0)
    mean, se = prod.mean(0), prod.std(0) / math.sqrt(z.shape[0])
    return float(((mean - torch.as_tensor(S)) / se).abs().max())


def trapped_aoup_formula_error(A: float, v0: float, gamma: float, eps: float) -> float:
    """Largest relative difference between the paper's closed forms for one trapped AOUP per
    dimension (S from :func:`derivation_trapped_aoup`, EPR gamma v0^2 / (eps (A + gamma)),
    g-part A gamma v0^2 / (eps (A + gamma)^2 + gamma v0^2)) and a numeric Lyapunov solve
    with B = [[A, -v0], [0, gamma]], D = diag(eps, gamma). All parameters > 0."""
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = lyapunov_covariance(B, D)
    S_formula = trapped_aoup_covariance(A, v0, gamma, eps)
    worst = float(np.abs(S - S_formula).max() / np.abs(S).max())
    num, formula = linear_epr(B, D, S), gamma * v0**2 / (eps * (A + gamma))
    num_g = linear_epr(B, D, S, parts=[1])
    formula_g = A * gamma * v0**2 / (eps * (A + gamma) ** 2 + gamma * v0**2)
    return max(worst, abs(num - formula) / formula, abs(num_g - formula_g) / formula_g)


def trapped_aoup_formula_worst(
    n_random: int, seed: int, low: float = 0.2, high: float = 3.0
) -> float:
    """The largest :func:`trapped_aoup_formula_error` over ``n_random`` parameter sets
    (A, v0, gamma, eps) drawn uniform in [low, high] by ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return max(trapped_aoup_formula_error(*rng.uniform(low, high, 4)) for _ in range(n_random))


def trapped_aoup_sweep_z(
    x: Tensor, g: Tensor, A: float, v0s: Iterable[float], gamma: float, eps: float
) -> float:
    """The largest :func:`covariance_z_score` of samples x, g (m, n, 1, d) of one trapped
    AOUP at each of the m speeds ``v0s`` against :func:`trapped_aoup_covariance`, over the
    speeds and the d dimensions (each dimension its own (x, g) pair)."""
    return max(
        covariance_z_score(
            torch.stack([x[j, :, 0, dim], g[j, :, 0, dim]], -1),
            trapped_aoup_covariance(A, v0, gamma, eps),
        )
        for j, v0 in enumerate(v0s)
        for dim in range(x.shape[-1])
    )


# ---- spring networks of AOUPs -----------------------------------------------------------------
def _np(L: np.ndarray | Tensor) -> np.ndarray:
    return L.detach().cpu().double().numpy() if isinstance(L, Tensor) else np.asarray(L, float)


def spring_network_B(
    L: np.ndarray | Tensor, A: float, k: float, v0: float, gamma: float
) -> np.ndarray:
    """B = [[A I + k L, -v0 I], [0, gamma I]], (2N, 2N), state (x_1..x_N, g_1..g_N) per
    spatial dimension, for dx = (-(A I + k L) x + v0 g) dt + ..., dg = -gamma g dt + ..."""
    L = _np(L)
    n = L.shape[0]
    eye = np.eye(n)
    return np.block([[A * eye + k * L, -v0 * eye], [np.zeros((n, n)), gamma * eye]])


def spring_network_D(N: int, eps: float, gamma: float) -> np.ndarray:
    """D = diag(eps I_N, gamma I_N), (2N, 2N)."""
    return np.diag(np.concatenate([np.full(N, float(eps)), np.full(N, float(gamma))]))


def spring_network(
    L: np.ndarray | Tensor, A: float, k: float, v0: float, gamma: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, D, S) of N AOUPs coupled by springs with Laplacian L (N, N), per spatial
    dimension: :func:`spring_network_B`, :func:`spring_network_D` and the Lyapunov
    covariance S (2N, 2N). L = [[0]], k = 0: one trapped AOUP."""
    B = spring_network_B(L, A, k, v0, gamma)
    D = spring_network_D(B.shape[0] // 2, eps, gamma)
    return B, D, lyapunov_covariance(B, D)


def spring_modal_epr(
    eigenvalues: np.ndarray | Tensor,
    A: float,
    k: float,
    v0: float,
    gamma: float,
    eps: float,
    dim: int = 2,
) -> float:
    """Total EPR of a spring network from the Laplacian spectrum (docs/papers.md):
    dim sum_q gamma v0^2 / (eps (A + k lambda_q + gamma)). Every mode is a trapped AOUP
    with trap A + k lambda_q (A = 0 allowed: the lambda = 0 mode is then a free particle)."""
    lam = _np(eigenvalues)
    if eps <= 0:
        raise ValueError(f"eps must be > 0 for the total EPR (it diverges at 0), got {eps}")
    return float(dim * np.sum(gamma * v0**2 / (eps * (A + k * lam + gamma))))


def spring_epr_per_particle(
    L: np.ndarray | Tensor, A: float, k: float, v0: float, gamma: float, eps: float, dim: int = 2
) -> tuple[float, float, float]:
    """(total, x-part, g-part) of the EPR per particle of N AOUPs on a spring network with
    Laplacian L (N, N) in ``dim`` dimensions: the total from the modal formula
    (:func:`spring_modal_epr`), the parts from the Lyapunov solution (:func:`linear_epr` over
    the x and the g coordinates), each divided by N. On a ring every particle is alike, so
    these are each particle's own shares."""
    n = _np(L).shape[0]
    lam = torch.linalg.eigvalsh(L) if isinstance(L, Tensor) else np.linalg.eigvalsh(L)
    total = spring_modal_epr(lam, A, k, v0, gamma, eps, dim=dim)
    B, D, S = spring_network(L, A, k, v0, gamma, eps)
    part_g = dim * linear_epr(B, D, S, parts=range(n, 2 * n))
    part_x = dim * linear_epr(B, D, S, parts=range(n))
    return total / n, part_x / n, part_g / n


def spring_network_checks(
    L: np.ndarray | Tensor, A: float, k: float, v0: float, gamma: float, eps: float
) -> tuple[float, float, float, float]:
    """Checks of a spring network's exact results, per spatial dimension: (div v, its
    x-part, its g-part, |modal - Lyapunov| / Lyapunov EPR). div v is 0 with x- and g-parts
    that cancel (docs/papers.md); :func:`spring_modal_epr` agrees with
    :func:`linear_epr` of the Lyapunov solution."""
    n = _np(L).shape[0]
    lam = torch.linalg.eigvalsh(L) if isinstance(L, Tensor) else np.linalg.eigvalsh(L)
    B, D, S = spring_network(L, A, k, v0, gamma, eps)
    modal, lyap = spring_modal_epr(lam, A, k, v0, gamma, eps, 1), linear_epr(B, D, S)
    div = functools.partial(divergence_of_velocity, B, D, S)
    return div(), div(range(n)), div(range(n, 2 * n)), abs(modal - lyap) / lyap


@dataclass
class AOUPChecks:
    """The paper's formulas vs numeric Lyapunov (max rel. difference), the trap samples' max
    |z|, div v of the ring (total, x-, g-part), its modal vs Lyapunov EPR (rel. difference)."""

    formula_vs_lyapunov: float
    mc_z: float
    div_total: float
    div_x: float
    div_g: float
    modal_vs_lyapunov: float


def aoup_checks(
    trap: tuple[float, Iterable[float], float, float],
    x_test: Tensor,
    g_test: Tensor,
    ring: tuple,
    n_random: int = 20,
    seed: int = 0,
) -> AOUPChecks:
    """The exact results checked numerically: :func:`trapped_aoup_formula_worst` on
    ``n_random`` random parameter sets, :func:`trapped_aoup_sweep_z` of held-out samples
    x_test, g_test (m, n, 1, d) of the trap (A, v0s, gamma, eps), and
    :func:`spring_network_checks` of the ring (L, A, k, v0, gamma, eps)."""
    worst = trapped_aoup_formula_worst(n_random, seed)
    z_max = trapped_aoup_sweep_z(x_test, g_test, *trap)
    return AOUPChecks(worst, z_max, *spring_network_checks(*ring))


# ---- estimators from a (learned) score -------------------------------------------------------
def per_particle_epr_g_from_score(s_g: Tensor, gamma: float) -> Tensor:
    """gamma (E|s_{g_i}|^2 - d) per particle, (N,), from s_g (n, N, d) at stationary samples.

    Because E[g_i . s_{g_i}] = -d (integration by parts) and E|g_i|^2 = d (g is N(0, I)),
    E|v_{g_i}|^2 / gamma = gamma E|g_i + s_{g_i}|^2 = gamma (E|s_{g_i}|^2 - d) (paper)."""
    if s_g.dim() != 3:
        raise ValueError(f"s_g must be (n, N, d), got shape {tuple(s_g.shape)}")
    return gamma * (s_g.pow(2).sum(-1).mean(0) - s_g.shape[-1])


def epr_g_from_score(s_g: Tensor, gamma: float) -> Tensor:
    """g-part of the EPR, gamma (E|s_g|^2 - N d), scalar tensor; s_g (n, N, d) (paper)."""
    return per_particle_epr_g_from_score(s_g, gamma).sum()


def per_particle_epr_g_from_divergence(div_g: Tensor, gamma: float, dim: int = 2) -> Tensor:
    """The same per-particle g-part by integration by parts, -gamma E[div_{g_i} s_{g_i}] -
    gamma d, (N,), from div_g (n, N) = div_{g_i} s_{g_i} at stationary samples (paper)."""
    if div_g.dim() != 2:
        raise ValueError(f"div_g must be (n, N), got shape {tuple(div_g.shape)}")
    return -gamma * div_g.mean(0) - gamma * dim


def particle_linear_score(S: np.ndarray | Tensor, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Exact score of a linear particle system whose per-dimension covariance S (2N, 2N)
    acts on z = (x_1..x_N, g_1..g_N): (s_x, s_g), each (n, N, d) for x, g (n, N, d)."""
    n_particles = x.shape[-2]
    z = torch.cat([x, g], dim=-2).transpose(-1, -2)  # (n, d, 2N): one z per dimension
    s = linear_score(S, z).transpose(-1, -2)
    return s[..., :n_particles, :], s[..., n_particles:, :]

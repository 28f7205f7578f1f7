"""The front door's live demo: exact PF-ODE trajectories of a 2D Gaussian mixture.

Data p0 = ring of 8 Gaussians; path x_t = alpha(t) x0 + sigma(t) z. The marginal p_t is a
mixture again, so the PF-ODE velocity v = alpha' D + sigma' (x - alpha D) / sigma is exact
(``theory.mixtures.MixtureFlow``). Trajectories start from exact samples of p_1 and are
integrated to t_end > 0 with a fixed-step solver; the claims check that the cloud at each
time is distributed as p_t (moments) and that the end points match the data (sliced W2).
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import paths, scale, solvers
from pflow_explore.claims import Claim, claim_below
from pflow_explore.datasets import eight_gaussians
from pflow_explore.experiment import Seeds, choose, presets
from pflow_explore.metrics import sliced_w2
from pflow_explore.theory import MixtureFlow
from pflow_explore.viz.style import thumbnail


@dataclass(frozen=True)
class Settings:
    """n_paths trajectories, n_steps solver steps from t = 1 to t_end; scale: the preset."""

    n_paths: int
    n_steps: int
    scale: str = "cpu"
    path: str = "linear"
    method: str = "rk4"
    std: float = 0.25
    radius: float = 2.0
    t_end: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.n_steps}")
        if not 0 < self.std <= 3:
            raise ValueError(f"blob std must be in (0, 3], got {self.std}")
        if self.n_paths < 16:
            raise ValueError(f"n_paths must be >= 16, got {self.n_paths}")
        if self.method not in solvers.FIXED_STEP_METHODS:
            valid = ", ".join(solvers.FIXED_STEP_METHODS)
            raise ValueError(f"unknown solver {self.method!r}; valid: {valid}")
        paths.get_path(self.path)  # raises with the valid names


SETTINGS = presets(
    Settings,
    tiny=dict(n_paths=256, n_steps=30),
    cpu=dict(n_paths=1024, n_steps=80),
    gpu=dict(n_paths=8192, n_steps=200),
)
# seed streams (offsets = the historical seed + k): start points, the reference samples
SEEDS = dict(start=0, reference=1)


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


@dataclass
class Results:
    """trajectories: (n_steps + 1, n_paths, 2) from t = 1 down to t_end; times: (n_steps + 1,)."""

    settings: Settings
    scale: str
    flow: MixtureFlow
    trajectories: Tensor
    times: Tensor
    nfe: int


def exact_flow(s: Settings) -> MixtureFlow:
    """The exact PF-ODE of the ring of 8 Gaussians under the chosen path."""
    return MixtureFlow(eight_gaussians(radius=s.radius, std=s.std), paths.get_path(s.path))


def exact_trajectories(flow: MixtureFlow, s: Settings) -> tuple[Tensor, Tensor, int]:
    """Integrate dx/dt = v(x, t) from exact samples of p_1 down to t_end.

    Returns (trajectories (n_steps + 1, n_paths, 2) on the CPU, times (n_steps + 1,), NFE).
    """
    gen = Seeds(s.seed, **SEEDS).generator("start")
    x1 = flow.sample(s.n_paths, 1.0, generator=gen).to(scale.device())
    times = torch.linspace(1.0, s.t_end, s.n_steps + 1, dtype=torch.float64)
    sol = solvers.odeint(flow.velocity, x1, times, method=s.method, trajectory=True)
    return sol.trajectory.cpu(), times, sol.nfe


def prepare(s: Settings) -> None:
    """Nothing to train or cache: the flow is exact."""


def run(s: Settings) -> Results:
    """The two steps: the exact flow (:func:`exact_flow`), then its trajectories
    (:func:`exact_trajectories`); the claims measure them (:func:`moment_errors`,
    :func:`endpoint_distance`)."""
    flow = exact_flow(s)
    traj, times, nfe = exact_trajectories(flow, s)
    return Results(s, s.scale, flow, traj, times, nfe)


def moment_errors(r: Results, i: int) -> dict[str, float]:
    """Mean and covariance errors of the cloud at step i against the exact p_t, with their
    Monte Carlo tolerances: 4 sqrt(tr S / n) for the mean and, for the covariance in
    Frobenius norm, 4 sqrt((tr(S)^2 + |S|_F^2) / n) (the Gaussian-moment approximation)."""
    x = r.trajectories[i].double()
    n = x.shape[0]
    exact = r.flow.marginal(float(r.times[i]))
    cov = exact.covariance()
    return {
        "t": float(r.times[i]),
        "mean_err": (x.mean(0) - exact.mean()).norm().item(),
        "cov_err": (torch.cov(x.T) - cov).norm().item(),
        "mean_tol": 4 * (cov.trace() / n).sqrt().item(),
        "cov_tol": 4 * ((cov.trace() ** 2 + cov.norm() ** 2) / n).sqrt().item(),
    }


def endpoint_distance(r: Results) -> tuple[float, float]:
    """(sliced W2 between end points and fresh exact samples of p_{t_end}, the same
    distance between two fresh exact sample sets: the Monte Carlo floor)."""
    gen = Seeds(r.settings.seed, **SEEDS).generator("reference")
    n, t_end = r.trajectories.shape[1], r.settings.t_end
    ref = r.flow.sample(n, t_end, generator=gen)
    floor = sliced_w2(ref, r.flow.sample(n, t_end, generator=gen), generator=gen)
    return sliced_w2(r.trajectories[-1], ref, generator=gen), floor


def claims(r: Results) -> list[Claim]:
    """The PF-ODE carries p_1 onto p_t: moments at three times, and the end points."""
    out = []
    last = len(r.times) - 1
    for i in (last // 2, last):
        m = moment_errors(r, i)
        t = f"t = {m['t']:.3g}"
        out.append(
            claim_below(
                f"mean of the cloud at {t}",
                "equals the mean of p_t",
                m["mean_err"],
                m["mean_tol"],
                r.scale,
                "tolerance: 4 Monte Carlo standard errors",
            )
        )
        out.append(
            claim_below(
                f"covariance of the cloud at {t}",
                "equals the covariance of p_t",
                m["cov_err"],
                m["cov_tol"],
                r.scale,
                "Frobenius norm; 4 Monte Carlo errors",
            )
        )
    err, floor = endpoint_distance(r)
    out.append(
        claim_below(
            "end points vs data (sliced W2)",
            "the flow ends on the data distribution",
            err,
            2 * floor,
            r.scale,
            f"bound: twice the Monte Carlo floor {floor:.3g}",
        )
    )
    return out


def trajectories_figure(r: Results, n_lines: int = 200) -> go.Figure:
    """End points over the first n_lines trajectories."""
    s = r.settings
    from pflow_explore.viz import points_figure

    return points_figure(
        r.trajectories[-1],
        trajectories=r.trajectories[:, :n_lines],
        title=f"exact PF-ODE, {s.path} path, {s.n_steps} {s.method} steps",
    )


def figures(r: Results) -> dict[str, go.Figure]:
    return {"trajectories": trajectories_figure(r)}


def preview() -> go.Figure:
    """A small trajectory picture for the landing page (64 paths, 20 steps)."""
    r = run(Settings(n_paths=64, n_steps=20, scale="tiny"))
    return thumbnail(trajectories_figure(r, n_lines=64))

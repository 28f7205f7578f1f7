"""Learning the pair (b, eta) of a stochastic interpolant and measuring it (docs/papers.md §02).

With x_t = I(t, x0, x1) + gamma(t) z, the velocity b(x, t) = E[d_t I + gamma' z | x_t = x]
and the denoiser eta(x, t) = -E[z | x_t = x] = gamma s(x, t) minimise quadratic losses
(:func:`interpolant_losses`, antithetic +-z, t ~ U[delta, 1 - delta] by
:func:`training_times`; :func:`interpolant_loss_fn` draws the batches of a
:class:`PairData` for ``training.fit``). The networks live in ``samplers.LearnedPair``
(images through :class:`FlatUNet`). Measuring: :func:`eps_sweep` samples the ODE and the
SDEs from one pair (:func:`generate`) and returns a :class:`Sweep` of distances to the
target, beside the noise floor of :func:`energy_floor`; :func:`field_errors` gives the
relative L2 errors of the learned b and eta against exact fields.

Time convention: flow (t = 0 is rho0, t = 1 is rho1). Fields take (x, t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pflow_explore.claims import Claim, claim_above, claim_below
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.interpolants import Interpolant
from pflow_explore.metrics import (
    bootstrap_se,
    energy_distance,
    flat_digits_features,
    frechet_distance,
    sliced_w2,
    support_share,
)
from pflow_explore.samplers import LearnedPair, VelocityScore, cosine_grid, sample
from pflow_explore.theory.interpolant_fields import InterpolantFields


# ---- the data pairs ----------------------------------------------------------------------
@dataclass
class PairData:
    """Where x0 and x1 come from. sample0, sample1: (n, generator) -> (n, d) float32 CPU;
    target(n, generator): held-out samples of rho1 to measure against (for digits: the
    test split); rho0, rho1: the exact mixtures where known (else None); image_shape:
    (C, H, W) for images, else None."""

    name: str
    dim: int
    sample0: Callable[[int, torch.Generator | None], Tensor]
    sample1: Callable[[int, torch.Generator | None], Tensor]
    target: Callable[[int, torch.Generator | None], Tensor]
    rho0: GaussianMixture | None
    rho1: GaussianMixture | None
    image_shape: tuple[int, int, int] | None = None

    @property
    def exact(self) -> bool:
        return self.rho0 is not None and self.rho1 is not None


def mixture_sampler(gm: GaussianMixture) -> Callable[[int, torch.Generator | None], Tensor]:
    """(n, generator) -> (n, d) float32 samples of ``gm``, its Cholesky factors computed once
    (``GaussianMixture.sample`` factors every covariance on every call: slow in d = 1024)."""
    chol = torch.linalg.cholesky(gm.covs)
    identity = gm.n_components == 1 and torch.equal(chol[0], torch.eye(gm.dim, dtype=chol.dtype))

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        labels = torch.multinomial(gm.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, gm.dim, generator=generator, dtype=torch.float64)
        if identity:
            return (gm.means[0] + z).float()
        return (gm.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z)).float()

    return sample


def rows_sampler(data: Tensor) -> Callable[[int, torch.Generator | None], Tensor]:
    """Sampler drawing n rows of ``data`` (N, d) with replacement."""
    return lambda n, generator=None: data[torch.randint(len(data), (n,), generator=generator)]


# ---- the networks and their losses -------------------------------------------------------------
class FlatUNet(nn.Module):
    """A UNet on flat images: x (n, C H W), t -> (n, C H W) (the UNet sees (n, C, H, W))."""

    def __init__(self, unet: nn.Module, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.unet, self.shape = unet, shape

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.unet(x.reshape(-1, *self.shape), t).reshape(x.shape[0], -1)


def interpolant_losses(
    model: LearnedPair, interpolant: Interpolant, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """The paper's quadratic losses (L_b, L_eta) on one batch, with antithetic noise.

    x0, x1, z: (n, d), t: (n,) in (0, 1). With x_t^+- = I(t, x0, x1) +- gamma(t) z,

        L_b   = E[ 1/2 |b(x^+)|^2 - (d_t I + gamma' z) . b(x^+)
                 + 1/2 |b(x^-)|^2 - (d_t I - gamma' z) . b(x^-) ] / 2,
        L_eta = E[ 1/2 |eta(x^+)|^2 + z . eta(x^+) + 1/2 |eta(x^-)|^2 - z . eta(x^-) ] / 2,

    each divided by d. L_b is minimised by b = E[d_t I + gamma' z | x_t], L_eta by
    eta = -E[z | x_t] = gamma s: it is the paper's L_s = E[1/2 |s|^2 + gamma^-1 z . s]
    weighted by gamma^2, which removes the 1/gamma singularity of its target. The pair
    +-z cancels the large gamma' z term of the b target to first order in gamma, where
    gamma' = a (1 - 2t) / (2 gamma) blows up (the variance reduction of the paper).
    """
    d = x0.shape[1]
    g = interpolant.gamma.gamma(t)[:, None].to(x0)
    mid = interpolant.interpolate(t, x0, x1)
    x_plus, x_minus = mid + g * z, mid - g * z
    target_plus = interpolant.velocity_target(t, x0, x1, z)
    target_minus = interpolant.velocity_target(t, x0, x1, -z)
    b_plus, b_minus = model.velocity(x_plus, t), model.velocity(x_minus, t)
    e_plus, e_minus = model.denoiser(x_plus, t), model.denoiser(x_minus, t)
    loss_b = (
        0.5 * (b_plus**2).sum(1)
        - (target_plus * b_plus).sum(1)
        + 0.5 * (b_minus**2).sum(1)
        - (target_minus * b_minus).sum(1)
    )
    loss_eta = (
        0.5 * (e_plus**2).sum(1)
        + (z * e_plus).sum(1)
        + 0.5 * (e_minus**2).sum(1)
        - (z * e_minus).sum(1)
    )
    return loss_b.mean() / (2 * d), loss_eta.mean() / (2 * d)


def training_times(n: int, t_delta: float, generator: torch.Generator | None = None) -> Tensor:
    """t ~ U[t_delta, 1 - t_delta], (n,) float32: away from the singular ends (docs/papers.md)."""
    return t_delta + (1 - 2 * t_delta) * torch.rand(n, generator=generator)


def interpolant_loss_fn(
    pair: PairData,
    interpolant: Interpolant,
    batch: int,
    t_delta: float,
    generator: torch.Generator,
    device: torch.device,
) -> Callable[[nn.Module, int], Tensor]:
    """loss_fn(model, step) -> L_b + L_eta (:func:`interpolant_losses`) on a fresh batch, for
    ``training.fit``.

    Independent x0 ~ rho0 and x1 ~ rho1 (the independent coupling), t ~ U[t_delta,
    1 - t_delta] and z ~ N(0, I), in this order, all drawn on the CPU from ``generator``
    and moved to ``device``.
    """

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        x0 = pair.sample0(batch, generator).to(device)
        x1 = pair.sample1(batch, generator).to(device)
        t = training_times(batch, t_delta, generator).to(device)
        z = torch.randn(batch, pair.dim, generator=generator).to(device)
        loss_b, loss_eta = interpolant_losses(model, interpolant, x0, x1, t, z)
        return loss_b + loss_eta

    return loss_fn


# ---- measuring samples against the target ------------------------------------------------
@dataclass
class Sweep:
    """Distances to the target of samples from one learned pair, per eps.

    eps (E,) (0 = the ODE); energy, sliced_w2 (E,); floor_energy, floor_sw2: the same
    distances between two independent target sets of the same size (the noise floor);
    source_energy: rho0's samples against the target (where training starts from);
    samples: (E, n_show, d) the first samples per eps (CPU); target: (n_show, d);
    frechet (E,) and frechet_floor for images (digits classifier), else None.
    """

    pair: str
    eps: Tensor
    energy: Tensor
    sliced_w2: Tensor
    floor_energy: float
    floor_sw2: float
    source_energy: float
    samples: Tensor
    target: Tensor
    frechet: Tensor | None = None
    frechet_floor: float | None = None


def distances(x: Tensor, y: Tensor, seed: int) -> tuple[float, float]:
    """(energy distance, sliced W2 with 256 seeded projections) between x (n, d) and y."""
    return energy_distance(x, y), sliced_w2(x, y, 256, torch.Generator().manual_seed(seed))


def energy_floor(
    sample: Callable[[int, torch.Generator | None], Tensor],
    target: Callable[[int, torch.Generator | None], Tensor],
    n: int,
    generator: torch.Generator,
    repeats: int = 3,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Mean (energy distance, sliced W2) between n draws of ``sample`` (training data) and n
    independent draws of ``target``, over ``repeats`` pairs: what a perfect model would
    measure at this n (for the 2D pairs both draw from rho1 itself)."""
    ed, sw = [], []
    for i in range(repeats):
        a, b = sample(n, generator).to(device), target(n, generator).to(device)
        e, w = distances(a, b, seed=i)
        ed.append(e)
        sw.append(w)
    return sum(ed) / repeats, sum(sw) / repeats


def generate(
    model: VelocityScore,
    x0: Tensor,
    eps: float,
    ode_steps: int,
    sde_steps: int,
    generator: torch.Generator | None = None,
    batch: int = 4096,
) -> Tensor:
    """Samples (n, d) from x0 (n, d) with ``samplers.sample``: the ODE (RK4 on ``ode_steps``)
    for eps = 0, else the SDE dX = (b + eps s) dt + sqrt(2 eps) dW (Euler-Maruyama on
    ``sde_steps``), both on the cosine grid (dense at the stiff ends)."""
    grid = cosine_grid(ode_steps if eps == 0 else sde_steps)
    return sample(model, x0, eps, grid, generator, batch=batch).x


def eps_sweep(
    model: LearnedPair,
    pair: PairData,
    eps_values: tuple[float, ...],
    n: int,
    keep: int,
    draw: Callable[[LearnedPair, Tensor, float, torch.Generator], Tensor],
    generator: torch.Generator,
    noise: Callable[[int], torch.Generator],
    seed: int,
    device: torch.device | None = None,
) -> Sweep:
    """ODE and SDE samples from the same pair (b, s) for every eps in ``eps_values``, from
    the same x0 (n, d), and their energy distance / sliced W2 to n held-out target samples.

    ``draw(model, x0, eps, noise)`` integrates the ODE (eps = 0) or the SDE; ``generator``
    draws x0, the target and the noise floor (:func:`energy_floor`), in this order;
    ``noise(i)`` is the SDE noise of the i-th eps; ``seed`` seeds the sliced-W2 projections.
    The first ``keep`` samples per eps are kept for figures.
    """
    dev = device or next(model.parameters()).device
    gen = generator
    x0 = pair.sample0(n, gen).to(dev)
    target = pair.target(n, gen).to(dev)
    floor_e, floor_w = energy_floor(pair.sample1, pair.target, n, gen, device=dev)
    source_e = energy_distance(x0, target)
    energies, sws, shown, frechets = [], [], [], []
    ref = None if pair.image_shape is None else flat_digits_features(target, pair.image_shape)
    for i, eps in enumerate(eps_values):
        x = draw(model, x0, float(eps), noise(i))
        e, w = distances(x, target, seed=seed)
        energies.append(e)
        sws.append(w)
        shown.append(x[:keep].float().cpu())
        if pair.image_shape is not None:
            frechets.append(frechet_distance(flat_digits_features(x, pair.image_shape), ref))
    frechet = frechet_floor = None
    if pair.image_shape is not None:
        frechet = torch.tensor(frechets, dtype=torch.float64)
        floor = flat_digits_features(pair.sample1(n, gen), pair.image_shape)
        frechet_floor = frechet_distance(floor, ref)
    f64 = torch.float64
    return Sweep(
        pair.name,
        torch.tensor(eps_values, dtype=f64),
        torch.tensor(energies, dtype=f64),
        torch.tensor(sws, dtype=f64),
        floor_e,
        floor_w,
        source_e,
        torch.stack(shown),
        target[:keep].float().cpu(),
        frechet,
        frechet_floor,
    )


# ---- learned fields against the exact ones ------------------------------------------------
@dataclass
class FieldErrors:
    """Relative L2 errors of the learned fields on x ~ rho_t, per time and overall.

    times (T,); b, eta: (T,) |f_learned - f_exact|_2 / |f_exact|_2 over the samples at
    each t; b_total, eta_total: the same over all times together; b_total_se, eta_total_se:
    their bootstrap standard errors (the n samples of every time resampled together).
    """

    pair: str
    times: Tensor
    b: Tensor
    eta: Tensor
    b_total: float
    eta_total: float
    b_total_se: float = math.nan
    eta_total_se: float = math.nan


@torch.no_grad()
def field_errors(
    model: LearnedPair,
    fields: InterpolantFields,
    times: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    pair: str = "",
) -> FieldErrors:
    """Relative L2 error of the learned b and eta against the exact ones on x ~ rho_t.

    For each t in ``times`` (T,), n samples x ~ rho_t (``InterpolantFields.sample``):
    err_f(t) = sqrt(sum |f_hat - f|^2 / sum |f|^2), f in {b, eta}.
    """
    dev = next(model.parameters()).device
    num: dict[str, list[Tensor]] = {"b": [], "eta": []}
    den: dict[str, list[Tensor]] = {"b": [], "eta": []}
    for t in times.tolist():
        x = fields.sample(t, n, generator, dtype=torch.float64)
        xd = x.float().to(dev)
        learned = {
            "b": model.velocity(xd, t).double().cpu(),
            "eta": model.denoiser(xd, t).double().cpu(),
        }
        exact = {"b": fields.velocity(x, t), "eta": fields.denoiser(x, t)}
        for k in num:  # per sample: (n,)
            num[k].append(((learned[k] - exact[k]) ** 2).sum(-1))
            den[k].append((exact[k] ** 2).sum(-1))
    nums = {k: torch.stack(v) for k, v in num.items()}  # (T, n)
    dens = {k: torch.stack(v) for k, v in den.items()}
    per = {k: (nums[k].sum(1) / dens[k].sum(1)).sqrt() for k in num}
    rel = lambda k, i: float((nums[k][:, i].sum() / dens[k][:, i].sum()).sqrt())
    total = {k: rel(k, slice(None)) for k in num}
    se = {k: bootstrap_se(lambda i, k=k: rel(k, i), n, 30, 0) for k in num}
    args = (per["b"], per["eta"], total["b"], total["eta"], se["b"], se["eta"])
    return FieldErrors(pair, times.double(), *args)


def field_error_claim(title: str, errors: FieldErrors, bound: float, scale: str) -> Claim:
    """The row 'learned b vs exact b': the relative L2 error ``b_total`` below ``bound``
    beyond 2 bootstrap SE (``b_total_se``)."""
    return claim_below(
        f"{title}: learned b vs exact b (relative L2 error)",
        "the quadratic loss L_b has the exact b as its minimiser",
        errors.b_total, bound, scale,
        f"x ~ rho_t at {len(errors.times)} times in [delta, 1 - delta], SE: bootstrap "
        f"over the samples; denoiser eta: {errors.eta_total:.3f}",
        se=errors.b_total_se,
    )  # fmt: skip


# ---- negative controls of the sample distances ---------------------------------------------
@dataclass
class SweepControls:
    """What a claim on a :class:`Sweep` is calibrated against, on its kept samples (k each).

    energy (E,): each eps's samples vs the kept target, n = k; gaussian: a moment-matched
    Gaussian (the target's mean and covariance: a model that learned two moments) vs the
    same target; on_support, on_support_se (E,): the share of each eps's samples where
    ``log_prob`` is finite, with its binomial standard error (None without a log_prob);
    misplaced_on_support, misplaced_energy: a control with ``misplace`` of the target's mass
    moved off the support (``move``), which the distances alone can miss.
    """

    energy: Tensor
    gaussian: float
    on_support: Tensor | None = None
    on_support_se: Tensor | None = None
    misplaced_on_support: float = math.nan
    misplaced_energy: float = math.nan


def moment_matched(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n draws (n, d) of the Gaussian with the mean and covariance of x (m, d)."""
    x = x.double()
    chol = torch.linalg.cholesky(torch.cov(x.T) + 1e-9 * torch.eye(x.shape[1], dtype=x.dtype))
    return x.mean(0) + torch.randn(n, x.shape[1], generator=generator, dtype=x.dtype) @ chol.T


def sweep_controls(
    sw: Sweep,
    seed: int,
    log_prob: Callable[[Tensor], Tensor] | None = None,
    move: Callable[[Tensor], Tensor] | None = None,
    misplace: float = 0.25,
) -> SweepControls:
    """:class:`SweepControls` of ``sw`` from its kept samples, draws seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    target = sw.target.double()
    energy = torch.tensor([energy_distance(x.double(), target) for x in sw.samples])
    gaussian = energy_distance(moment_matched(target, len(target), gen), target)
    out = SweepControls(energy.double(), gaussian)
    if log_prob is not None:
        share = lambda x: support_share(log_prob, x.float())
        on = torch.tensor([share(x) for x in sw.samples], dtype=torch.float64)
        out.on_support, out.on_support_se = on, (on * (1 - on) / sw.samples.shape[1]).sqrt()
        if move is not None:  # fresh target draws are not stored: the kept target, reshuffled
            wrong = target[torch.randperm(len(target), generator=gen)]
            k = int(misplace * len(wrong))
            wrong = torch.cat([move(wrong[:k]), wrong[k:]])
            out.misplaced_on_support = share(wrong)
            out.misplaced_energy = energy_distance(wrong, target)
    return out


def control_claims(
    title: str,
    sw: Sweep,
    seed: int,
    scale: str,
    log_prob: Callable[[Tensor], Tensor] | None = None,
    move: Callable[[Tensor], Tensor] | None = None,
    support: float = 0.9,
) -> list[Claim]:
    """A sweep's samples against negative controls (:func:`sweep_controls`), on its kept
    samples (k per eps), as claims with their criteria fixed here: every eps closer to the
    target than half the energy distance of a moment-matched Gaussian; with ``log_prob``,
    the ODE's and (worst eps) every SDE's share of samples on the support > ``support``
    beyond 2 binomial standard errors (with ``move``, the note gives the energy of a control
    with 25% of the target's mass moved off the support, which a distance threshold alone
    lets pass)."""
    ctl = sweep_controls(sw, seed, log_prob, move)
    k, worst, eps = sw.samples.shape[1], int(ctl.energy.argmax()), sw.eps.tolist()
    per_eps = ", ".join(f"{e:g}: {v:.2e}" for e, v in zip(eps, ctl.energy.tolist(), strict=True))
    rows = [claim_below(
        f"{title}: closer than a moment-matched Gaussian (worst eps, energy distance)",
        "the learned (b, s) transports rho0 to rho1, not just its mean and covariance",
        float(ctl.energy[worst]), 0.5 * ctl.gaussian, scale,
        f"bound: half the moment-matched Gaussian's {ctl.gaussian:.2e}; energy at n = {k} per "
        f"eps: {per_eps}",
    )]  # fmt: skip
    if ctl.on_support is not None:  # the ODE, then the worst SDE of the sweep
        on, se = ctl.on_support.tolist(), ctl.on_support_se.tolist()
        paper = "the samples follow rho1 (all its mass lies on its support)"
        control = (
            f"n = {k}, SE binomial; control with 25% of the target's mass off the support: "
            f"share {ctl.misplaced_on_support:.0%}, energy {ctl.misplaced_energy:.2e} (a distance "
            "threshold alone lets it pass)"
        )
        rows.append(claim_above(
            f"{title}: ODE share of samples on the target's support", paper, on[0], support,
            scale, control, se=se[0],
        ))  # fmt: skip
        if len(on) > 1:
            low = 1 + min(range(len(on) - 1), key=lambda i: on[1 + i])
            shares = ", ".join(f"{e:g}: {v:.1%}" for e, v in zip(eps[1:], on[1:], strict=True))
            rows.append(claim_above(
                f"{title}: every SDE of the sweep, share on the target's support (worst eps)",
                paper, on[low], support, scale, f"eps in {shares}; n = {k} each, SE binomial",
                se=se[low],
            ))  # fmt: skip
    return rows

"""Mean-reverting diffusion (IR-SDE / MR Sampler, docs/papers.md §05) derived with sympy.

Time convention: diffusion (t = 0 the clean x0, t = T: mu plus noise of std ~lambda).

Three derivations, as :class:`~pflow_explore.theory.gaussian_flow.Derivation` objects (labelled
steps a notebook can display; ``result`` is the equation the numerics use):

- :func:`marginal_moments`: the moment ODEs of dx = theta (mu - x) dt + sigma dW with
  sigma^2 = 2 lambda^2 theta, m' = theta (mu - m), v' = -2 theta v + sigma^2, solved by
  ``dsolve`` for constant theta from m(0) = x0, v(0) = 0, equal to the closed form
  m = mu + alpha (x0 - mu), v = lambda^2 (1 - alpha^2) with alpha = e^{-theta t}; the
  closed form with alpha = exp(-Theta(t)), Theta' = theta(t), solves them for any theta(t).
- :func:`log_snr_rate`: d lam / dt = -theta lambda^2 / sigmabar^2 for lam = log(alpha /
  sigmabar), hence sigma^2 / 2 = -sigmabar^2 d lam / dt, and alpha, sigmabar as functions
  of lam.
- :func:`first_order_update`: the PF-ODE of y = x - mu in lam, solved by variation of
  constants with the prediction held fixed over the step: the MR Sampler's first-order
  noise- and data-prediction updates (``mean_reverting.steps``).
- :func:`taylor_coefficients`: int_0^h e^{-(h-u)} u^k / k! du = h^{k+1} phi_{k+1}(-h), the
  coefficients of the higher-order (Taylor) terms.
"""

from __future__ import annotations

import sympy as sp

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

t = sp.Symbol("t", nonnegative=True)
theta, lam_, x0, mu = sp.symbols("theta lambda x_0 mu", positive=True)
l, l_s, l_t, h, u = sp.symbols("ell ell_s ell_t h u", real=True)
y_s, eps, d = sp.symbols("y_s epsilon d", real=True)  # d = x0^ - mu
m, v, y = sp.Function("m"), sp.Function("v"), sp.Function("y")
Theta = sp.Function("Theta")


@stored
def marginal_moments() -> Derivation:
    """Mean and variance of x_t given x0 from the moment ODEs (see the module docstring)."""
    ode_m = sp.Eq(m(t).diff(t), theta * (mu - m(t)))
    ode_v = sp.Eq(v(t).diff(t), -2 * theta * v(t) + 2 * lam_**2 * theta)
    sol_m = sp.dsolve(ode_m, m(t), ics={m(0): x0})
    sol_v = sp.dsolve(ode_v, v(t), ics={v(0): 0})
    alpha = sp.exp(-theta * t)
    closed_m, closed_v = mu + alpha * (x0 - mu), lam_**2 * (1 - alpha**2)
    same = sp.simplify(sol_m.rhs - closed_m) == 0 and sp.simplify(sol_v.rhs - closed_v) == 0
    if not same:  # pragma: no cover - sympy sanity
        raise AssertionError("dsolve disagrees with the closed form")
    a_gen = sp.exp(-Theta(t))  # any schedule: Theta' = theta(t)
    th = Theta(t).diff(t)
    res_m = sp.simplify((mu + a_gen * (x0 - mu)).diff(t) - th * (mu - (mu + a_gen * (x0 - mu))))
    res_v = sp.simplify((lam_**2 * (1 - a_gen**2)).diff(t) + 2 * th * lam_**2 * (1 - a_gen**2))
    res_v = sp.simplify(res_v - 2 * lam_**2 * th)
    result = sp.Eq(sp.Tuple(m(t), v(t)), sp.Tuple(closed_m, closed_v))
    steps = (
        ("mean ODE", ode_m),
        ("variance ODE", ode_v),
        ("mean, constant theta", sol_m),
        ("variance, constant theta", sol_v),
        ("closed form, alpha = exp(-theta t)", result),
        ("residuals for alpha = exp(-Theta(t))", sp.Tuple(res_m, res_v)),
    )
    return Derivation("Marginal of the mean-reverting SDE", steps, result)


@stored
def log_snr_rate() -> Derivation:
    """d lam / dt = -theta lambda^2 / sigmabar^2 and alpha(lam), sigmabar(lam)."""
    alpha = sp.exp(-Theta(t))
    sbar = lam_ * sp.sqrt(1 - alpha**2)
    rate = sp.simplify((sp.log(alpha) - sp.log(sbar)).diff(t))
    th = Theta(t).diff(t)
    claim = -th * lam_**2 / sbar**2
    if sp.simplify(rate - claim) != 0:  # pragma: no cover - sympy sanity
        raise AssertionError("log-SNR rate")
    a_of_l = lam_ * sp.exp(l) / sp.sqrt(1 + lam_**2 * sp.exp(2 * l))
    s_of_l = lam_ / sp.sqrt(1 + lam_**2 * sp.exp(2 * l))
    checks = sp.Tuple(
        sp.simplify(sp.log(a_of_l / s_of_l) - l), sp.simplify(s_of_l**2 - lam_**2 * (1 - a_of_l**2))
    )
    result = sp.Eq(sp.Symbol("dlam/dt"), claim)
    steps = (
        ("log-SNR", sp.Eq(sp.Symbol("lam"), sp.log(alpha / sbar))),
        ("rate", sp.Eq(sp.Symbol("dlam/dt"), rate)),
        ("simplified", result),
        (
            "sigma^2 / 2 = -sigmabar^2 dlam/dt",
            sp.Eq(lam_**2 * th, sp.simplify(-(sbar**2) * claim), evaluate=False),
        ),
        ("alpha(lam)", sp.Eq(sp.Symbol("alpha"), a_of_l)),
        ("sigmabar(lam)", sp.Eq(sp.Symbol("sigmabar"), s_of_l)),
        ("checks (both 0)", checks),
    )
    return Derivation("Log-SNR of the mean-reverting SDE", steps, result)


@stored
def first_order_update() -> Derivation:
    """y = x - mu along the PF-ODE in lam: dy/dlam = (1 - alpha^2) y - sigmabar eps, i.e.
    d(y / alpha)/dlam = -e^{-lam} eps and, with eps = (y - alpha d) / sigmabar,
    d(y / sigmabar)/dlam = e^{lam} d; held fixed over [l_s, l_t] (h = l_t - l_s):

        y_t = (alpha_t / alpha_s) y_s - sigmabar_t (e^h - 1) eps,
        y_t = (sigmabar_t / sigmabar_s) y_s + alpha_t (1 - e^{-h}) d.
    """
    a = lambda x: lam_ * sp.exp(x) / sp.sqrt(1 + lam_**2 * sp.exp(2 * x))
    s = lambda x: lam_ / sp.sqrt(1 + lam_**2 * sp.exp(2 * x))
    # dy/dt = -theta y + lambda^2 theta eps / sbar over dlam/dt = -theta lambda^2 / sbar^2
    dy_dl = sp.simplify((-y(l) + lam_**2 * eps / s(l)) / (-(lam_**2) / s(l) ** 2))
    factor_noise = sp.simplify(sp.diff(y(l) / a(l), l).subs(y(l).diff(l), dy_dl))
    noise = a(l_t) / a(l_s) * y_s + a(l_t) * sp.integrate(-sp.exp(-l) * eps, (l, l_s, l_t))
    dy_dl_data = dy_dl.subs(eps, (y(l) - a(l) * d) / s(l))
    factor_data = sp.simplify(sp.diff(y(l) / s(l), l).subs(y(l).diff(l), dy_dl_data))
    data = s(l_t) / s(l_s) * y_s + s(l_t) * sp.integrate(sp.exp(l) * d, (l, l_s, l_t))
    card_noise = a(l_t) / a(l_s) * y_s - s(l_t) * (sp.exp(l_t - l_s) - 1) * eps
    card_data = s(l_t) / s(l_s) * y_s + a(l_t) * (1 - sp.exp(-(l_t - l_s))) * d
    checks = sp.Tuple(sp.simplify(noise - card_noise), sp.simplify(data - card_data))
    result = sp.Eq(sp.Tuple(sp.Symbol("y_t^noise"), sp.Symbol("y_t^data")), sp.Tuple(noise, data))
    steps = (
        ("PF-ODE in lam", sp.Eq(y(l).diff(l), dy_dl)),
        ("d(y/alpha)/dlam", factor_noise),
        ("noise-prediction update", sp.Eq(sp.Symbol("y_t"), noise)),
        ("d(y/sigmabar)/dlam", factor_data),
        ("data-prediction update", sp.Eq(sp.Symbol("y_t"), data)),
        ("minus the card's forms (both 0)", checks),
    )
    return Derivation("First-order MR Sampler updates", steps, result)


@stored
def taylor_coefficients() -> Derivation:
    """int_0^h e^{-(h - u)} u^k / k! du for k = 0, 1, 2 against h^{k+1} phi_{k+1}(-h)."""
    z = -h
    phis = (
        (sp.exp(z) - 1) / z,
        (sp.exp(z) - 1 - z) / z**2,
        (sp.exp(z) - 1 - z - z**2 / 2) / z**3,
    )
    ints = tuple(
        sp.integrate(sp.exp(-(h - u)) * u**k / sp.factorial(k), (u, 0, h)) for k in range(3)
    )
    diffs = sp.Tuple(
        *(
            sp.simplify(i - h ** (k + 1) * p)
            for k, (i, p) in enumerate(zip(ints, phis, strict=True))
        )
    )
    result = sp.Eq(sp.Tuple(*(sp.Symbol(f"c_{k}") for k in range(3))), sp.Tuple(*ints))
    steps = (("phi_k(-h)", sp.Tuple(*phis)), ("integrals", result), ("differences", diffs))
    return Derivation("Coefficients of the Taylor terms (data prediction)", steps, result)

"""The course's notation: each symbol with its one meaning, and where a chapter differs.

The papers of the course write the same letter for different things (D is a denoiser in
EDM and a diffusion matrix in active matter; alpha is a noise schedule and a guidance
weight). The course keeps one meaning per symbol (:data:`SYMBOLS`) and lists every place a
chapter keeps its paper's letter for something else (:data:`LOCAL`), so a reader moving
between chapters knows what changed. notebooks/notation.ipynb renders both tables.

Where a symbol names a function of the package (``code``), :func:`check` imports it: the
table cannot drift from the code unnoticed.
"""

from __future__ import annotations

import functools
import html
import importlib
from dataclasses import dataclass

TIME_CONVENTION = (
    "Time t runs in [0, 1] the diffusion way: t = 0 is the data, t = 1 is noise, and sampling "
    "integrates from t = 1 down to t = 0 (pflow_explore/paths.py); a path is "
    "x_t = alpha(t) x_0 + sigma(t) z with z ~ N(0, I), and in the VE / EDM chapters the noise "
    "level sigma itself is the time. Flow matching counts the other way (t = 0 noise or the "
    "source density, t = 1 data, samples move forward): chapters 02 and 03 follow their "
    "papers there, flagged below; replace t by 1 - t to convert. Chapter 12 uses physical "
    "time (a stationary process). Every function of the package that takes a time says which "
    'convention it uses in its docstring ("Time convention: ...").'
)


@dataclass(frozen=True)
class Symbol:
    """symbol: as written in the notebooks (LaTeX); meaning: its one meaning in the
    course; code: the package name that computes it, if any (``module:attribute``)."""

    symbol: str
    meaning: str
    code: str = ""


@dataclass(frozen=True)
class Local:
    """A chapter that keeps its paper's letter: ``symbol`` means ``meaning`` there; the
    course writes it ``course_symbol``."""

    chapter: int
    symbol: str
    meaning: str
    course_symbol: str


SYMBOLS: tuple[Symbol, ...] = (
    Symbol("d", "dimension of a sample"),
    Symbol("n", "number of samples (a batch, a Monte Carlo estimate)"),
    Symbol("t", "time in [0, 1]: t = 0 data, t = 1 noise (see the time convention)"),
    Symbol("x", "a state, a point of R^d"),
    Symbol("x_0", "a data sample"),
    Symbol("z", "standard Gaussian noise, z ~ N(0, I)"),
    Symbol("x_t", "the state at time t of the path x_t = alpha(t) x_0 + sigma(t) z"),
    Symbol(
        "\\alpha(t),\\ \\sigma(t)",
        "the path's data and noise coefficients",
        "pflow_explore.paths:Path",
    ),
    Symbol("p_t", "the density of x_t (rho_t in chapters 02 and 12)"),
    Symbol("\\mu,\\ \\Sigma", "mean and covariance of a Gaussian"),
    Symbol(
        "\\lambda_k,\\ c_k",
        "eigenvalues of a covariance (Sigma = U diag(lambda) U^T) and eigen-coordinates "
        "c_k = u_k^T (x - mu)",
    ),
    Symbol("\\sigma", "noise level: the standard deviation of the Gaussian noise added"),
    Symbol(
        "D(x, t)",
        "denoiser, the posterior mean E[x_0 | x_t = x]; VE: D(x; sigma) = x + sigma^2 s",
        "pflow_explore.edm:edm_denoiser",
    ),
    Symbol(
        "s(x, t)",
        "score, the gradient of log p_t; from the denoiser s = (alpha D - x) / sigma^2",
        "pflow_explore.score_matching:denoising_loss",
    ),
    Symbol("\\hat z", "the implied noise (x - alpha D) / sigma (epsilon-prediction)"),
    Symbol(
        "v(x, t)",
        "velocity of the probability-flow ODE dx/dt = v = alpha' D + sigma' z-hat; "
        "VE: dx/dsigma = (x - D) / sigma",
        "pflow_explore.paths:Path.velocity_from_denoiser",
    ),
    Symbol("b(x, t)", "drift of an SDE dx = b dt + sqrt(2 eps) dW"),
    Symbol("\\varepsilon", "diffusion coefficient of an SDE (noise strength, sqrt(2 eps) dW)"),
    Symbol("\\mathbf{D}", "diffusion matrix of a multidimensional SDE"),
    Symbol("w", "classifier-free guidance weight", "pflow_explore.flow_matching:guided_velocity"),
    Symbol(
        "\\mathcal{S}",
        "straightness of a flow, the mean squared departure from straight paths",
        "pflow_explore.trajectories:straightness",
    ),
    Symbol("\\mathrm{NFE}", "number of network (or field) evaluations of a sampler"),
    Symbol("\\mathrm{EPR}", "entropy production rate, E[v . D^-1 v] at stationarity"),
    Symbol("W_2,\\ SW_2", "Wasserstein-2 and sliced Wasserstein-2 distances"),
    Symbol("\\mathrm{FD}", "Frechet distance in a classifier's feature space"),
    Symbol("settings", "a chapter's Settings object (the sizes of one scale)"),
)

LOCAL: tuple[Local, ...] = (
    Local(0, "\\alpha = 1 - t,\\ \\sigma = t", "the linear path, in the course's time", "-"),
    Local(1, "\\sigma", "the time: the PF-ODE runs from sigma_max down to 0 (VE / EDM)", "sigma"),
    Local(1, "\\bar\\alpha_t", "the VP schedule, x_t = sqrt(abar) x_0 + sqrt(1 - abar) z", "-"),
    Local(2, "t", "flow time: t = 0 the source rho_0, t = 1 the target rho_1", "1 - t"),
    Local(2, "x_0,\\ x_1", "samples of the source and of the target", "z, x_0"),
    Local(2, "b(x, t)", "the velocity of the interpolant's ODE (the paper's name)", "v(x, t)"),
    Local(2, "\\gamma(t)", "the latent-noise coefficient of the interpolant", "sigma(t)"),
    Local(2, "\\eta", "the noise predictor, eta = gamma s = -E[z | x_t]", "-sigma s"),
    Local(2, "m,\\ C", "mean and covariance of the Gaussian endpoints", "\\mu, \\Sigma"),
    Local(3, "t", "flow time: t = 0 noise, t = 1 data, samples move forward", "1 - t"),
    Local(3, "X_0,\\ X_1", "noise and data samples", "z, x_0"),
    Local(3, "\\sigma", "standard deviation of the Gaussian target in the exact example", "-"),
    Local(3, "S", "straightness", "\\mathcal{S}"),
    Local(3, "\\alpha", "the guidance weight of classifier-free guidance", "w"),
    Local(3, "s(z_0)", "the displacement of the distilled one-step map z_0 + s(z_0)", "-"),
    Local(4, "t", "the time is the noise level, x_t = x_0 + t z, t in [0.002, 80] (EDM)", "sigma"),
    Local(4, "s,\\ u", "the end and middle times of a jump, t > u >= s (not the score)", "-"),
    Local(4, "G(x_t, t, s)", "the jump along the PF-ODE from t to s (consistency.jump)", "-"),
    Local(4, "g(x, t, s)", "the jump network; its diagonal g(x, t, t) is the denoiser D", "-"),
    Local(4, "\\gamma", "the noise share of gamma-sampling (0: ODE jumps, 1: CM multistep)", "-"),
    Local(5, "t", "diffusion time in [0, T], T = 100: t = 0 clean, t = T mu plus noise", "-"),
    Local(5, "\\mu", "the condition (the degraded image) the SDE reverts to, not a mean", "-"),
    Local(5, "\\theta_t,\\ \\lambda", "mean-reversion rate; the noise std at t = T", "-"),
    Local(
        5,
        "\\alpha_t,\\ \\bar\\sigma_t",
        "x_t = mu + alpha (x_0 - mu) + sigmabar z",
        "\\alpha(t), \\sigma(t)",
    ),
    Local(5, "\\ell_t,\\ h", "log-SNR log(alpha / sigmabar) and its step ell_t - ell_s", "-"),
    Local(5, "\\hat\\varepsilon,\\ \\hat x_0", "noise and data predictions", "\\hat z, D"),
    Local(6, "t", "t = 0 the HR image, t = 1 the noisy upsampled LR image LRup + sigma_max z", "-"),
    Local(6, "\\mathrm{LRup}", "the upsampled low-resolution observation, the condition", "-"),
    Local(
        6,
        "f^*(y, z)",
        "the exact one-step map: posterior mean + posterior cov^(1/2) z (Gaussian)",
        "-",
    ),
    Local(6, "N", "the consistency-training grid t_n = n / N (annealed 4 -> 3 in the paper)", "-"),
    Local(6, "D", "DTM's frozen copy of the one-step model (not a denoiser)", "-"),
    Local(7, "\\rho", "rho = sigma / alpha, the flow's variable: rho = 0 is the data", "-"),
    Local(7, "y", "y = x / alpha, the rescaled state of the reparameterized PF-ODE", "-"),
    Local(7, "a(\\rho)", "the adjoint dL/dy, solved from the data end back to rho_T", "-"),
    Local(
        7,
        "\\varepsilon_\\theta",
        "the noise predictor, a network trained toward E[z given x_t]",
        "\\hat z",
    ),
    Local(8, "t_L", "the editing level: CODE inverts to it, SDEdit noises to it", "t_0"),
    Local(8, "K,\\ e", "Langevin steps at t_L and their size e = step scale x sigma^2", "-"),
    Local(8, "\\eta", "the clipping width: |x_t| <= alpha + eta sigma", "-"),
    Local(8, "y", "the corrupted (guidance) image; not chapter 07's rescaled state", "-"),
    Local(9, "t", "flow time: t = 0 noise, t = 1 data; chunk k of a generation is x at t_k", "-"),
    Local(9, "c,\\ e", "chunk indices: chunk c reads the earlier chunks e < c", "-"),
    Local(9, "S_c", "gated linear attention state after chunks 0..c-1 (d x d per head)", "-"),
    Local(9, "g,\\ \\gamma_c", "log-decay g <= 0, decay exp(mean g) (not chapter 02's gamma)", "-"),
    Local(9, "D_{c,e}", "the unrolled decay prod_{e<m<c} gamma_m (not a denoiser)", "-"),
    Local(9, "C,\\ K", "training sequence length; sampling steps (= chunks generated)", "-"),
    Local(10, "\\tau", "clip time in [0, 1], frame f at tau = f / (F - 1); 0 the drawing", "-"),
    Local(10, "t", "the motion prior's flow time: t = 0 noise, t = 1 a keypoint clip", "1 - t"),
    Local(10, "P_{k,i}", "control point i of keypoint k's cubic Bezier path", "-"),
    Local(10, "J_T", "triangle T's Jacobian, posed edges times rest edges^-1 (2x2)", "-"),
    Local(10, "\\kappa", "the rate at which the Jacobian ODE relaxes J towards the pose", "-"),
    Local(11, "t", "video time in frames; the score is taken at a fixed small sigma", "-"),
    Local(11, "v", "the motion field carrying the video's density (not a PF-ODE velocity)", "-"),
    Local(11, "s_t", "the frame score grad log p_sigma(x_t) at noise level sigma", "s(x, t)"),
    Local(11, "dx_t", "central temporal difference (x_{t+1} - x_{t-1}) / 2", "-"),
    Local(11, "\\mathrm{NSG}", "normalized spatiotemporal gradient s / d_t log p", "-"),
    Local(11, "\\epsilon", "the floor of the NSG's denominator <s_t, dx_t>", "-"),
    Local(11, "k,\\ \\phi", "the deep kernel and its learned feature map (MMD test)", "-"),
    Local(12, "D", "the diffusion matrix diag(eps, gamma)", "\\mathbf{D}"),
    Local(12, "b", "the drift of the active particles' SDE", "b"),
    Local(12, "v", "the probability velocity v = b - D s, current / density", "-"),
    Local(12, "\\gamma", "the relaxation rate of the active force g", "-"),
    Local(12, "S", "the stationary covariance (Lyapunov equation B S + S B^T = 2 D)", "\\Sigma"),
    Local(12, "A", "the stiffness of the harmonic trap", "-"),
)


def symbols_html() -> str:
    """The course's symbols as an HTML table (MathJax renders the symbols)."""
    rows = "".join(
        f"<tr><td>${s.symbol}$</td><td>{html.escape(s.meaning)}</td>"
        f"<td><code>{html.escape(s.code.replace(':', '.'))}</code></td></tr>"
        if s.code
        else f"<tr><td>${s.symbol}$</td><td>{html.escape(s.meaning)}</td><td></td></tr>"
        for s in SYMBOLS
    )
    head = "<tr><th>symbol</th><th>meaning in the course</th><th>in the package</th></tr>"
    return f"<table class='pflow-notation'>{head}{rows}</table>"


def local_html() -> str:
    """Where a chapter keeps its paper's letter, as an HTML table."""
    rows = "".join(
        f"<tr><td>{u.chapter:02d}</td><td>${u.symbol}$</td><td>{html.escape(u.meaning)}</td>"
        f"<td>{'$' + u.course_symbol + '$' if u.course_symbol != '-' else '-'}</td></tr>"
        for u in LOCAL
    )
    head = "<tr><th>chapter</th><th>symbol</th><th>means there</th><th>course symbol</th></tr>"
    return f"<table class='pflow-notation-local'>{head}{rows}</table>"


def markdown() -> str:
    """The same tables as Markdown: the "Notation" section of docs/papers.md (a test keeps
    that section equal to this text, so the page a reader finds on GitHub is this one)."""
    code = lambda s: f"`{s.code.replace(':', '.')}`" if s.code else ""
    sym = "\n".join(f"| ${s.symbol}$ | {s.meaning} | {code(s)} |" for s in SYMBOLS)
    loc = "\n".join(
        f"| {u.chapter:02d} | ${u.symbol}$ | {u.meaning} | "
        f"{'$' + u.course_symbol + '$' if u.course_symbol != '-' else '-'} |"
        for u in LOCAL
    )
    return (
        f"**Time.** {TIME_CONVENTION}\n\n"
        "| symbol | meaning in the course | in the package |\n|---|---|---|\n"
        f"{sym}\n\n"
        "Where a chapter keeps its paper's letter for something else:\n\n"
        "| chapter | symbol | means there | course symbol |\n|---|---|---|---|\n"
        f"{loc}\n"
    )


def check() -> list[str]:
    """Problems with the tables (empty: none): a ``code`` name that does not import, a
    symbol listed twice, a local use in a chapter the course does not have."""
    from pflow_explore import course

    problems = []
    for s in SYMBOLS:
        if s.code:
            module, _, name = s.code.partition(":")
            try:
                functools.reduce(getattr, name.split("."), importlib.import_module(module))
            except (ImportError, AttributeError) as error:
                problems.append(f"{s.symbol}: {s.code} does not resolve ({error})")
    seen = [s.symbol for s in SYMBOLS]
    problems += [f"{x} listed twice" for x in sorted(set(seen)) if seen.count(x) > 1]
    chapters = {0, *(c.number for c in course.OUTLINE)}
    problems += [
        f"chapter {u.chapter} not in the outline" for u in LOCAL if u.chapter not in chapters
    ]
    return problems

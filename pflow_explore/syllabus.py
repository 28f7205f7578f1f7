"""The course as an instructor plans it: prerequisites, outcomes, study time, references.

``course.OUTLINE`` says which chapters exist and what each is about; this module adds what a
syllabus needs, chapter by chapter (:data:`PLANS`): the chapters it builds on, the
background from outside the course it assumes, what the student can do afterwards, the
study time, and the papers with their links. It renders

- a chapter's front matter (:func:`front_matter`, the first cell of every chapter notebook),
- the syllabus page (:func:`course_map_html`, :func:`plan_html`; notebooks/syllabus.ipynb).

Everything here is content; :func:`check` is what the tests run to keep it consistent with
the outline (every prerequisite is an earlier chapter, every chapter has a plan).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from pflow_explore import course

FRONT_DOOR = 0  # chapter 00, "start here"


@dataclass(frozen=True)
class Reference:
    """A paper (and its code) a chapter follows."""

    authors: str
    title: str
    year: int
    url: str  # the paper (arXiv abstract page)
    code: str = ""  # the authors' code, a GitHub address

    def html(self) -> str:
        code = f' (<a href="{self.code}" target="_blank">code</a>)' if self.code else ""
        return (
            f'{html.escape(self.authors)} ({self.year}). <a href="{self.url}" target="_blank">'
            f"<i>{html.escape(self.title)}</i></a>{code}."
        )


@dataclass(frozen=True)
class Plan:
    """What a chapter asks of the student and gives back.

    requires: numbers of the chapters it builds on (0 is "start here"); background: what
    it assumes from outside the course; outcomes: what the student can do afterwards;
    hours: study time for the notebook and its exercises at scale cpu; advanced: a chapter
    whose background goes beyond the others (the syllabus marks it).
    """

    requires: tuple[int, ...]
    background: str
    outcomes: tuple[str, ...] = ()
    hours: float = 0.0
    references: tuple[Reference, ...] = ()
    advanced: bool = False


ARXIV = "https://arxiv.org/abs/"

PLANS: dict[int, Plan] = {
    0: Plan(
        requires=(),
        background="Python and numpy; the multivariate Gaussian; an ODE and Euler's method.",
        outcomes=(
            "say what a probability flow is: an ODE whose solutions carry one density onto another",
            "run any chapter small on a laptop or large on a GPU with one parameter",
        ),
        hours=1.0,
    ),
    1: Plan(
        requires=(0,),
        background="Eigendecomposition of a covariance matrix; linear ODEs.",
        outcomes=(
            "derive the closed-form PF-ODE solution for Gaussian data and read off when "
            "each feature is fixed",
            "train an EDM-preconditioned denoiser and sample it with Heun's method",
            "test a trained model against the Gaussian theory (teleportation, feature order)",
        ),
        hours=3.0,
        references=(
            Reference(
                "B. Wang, J. J. Vastola",
                "Diffusion models generate images like painters: an analytical theory of "
                "outline first, details later",
                2023,
                ARXIV + "2303.02490",
                "https://github.com/Animadversio/DiffusionSpectra",
            ),
            Reference(
                "T. Karras, M. Aittala, T. Aila, S. Laine",
                "Elucidating the design space of diffusion-based generative models",
                2022,
                ARXIV + "2206.00364",
                "https://github.com/NVlabs/edm",
            ),
        ),
    ),
    2: Plan(
        requires=(0, 1),
        background="Stochastic differential equations (Ito, Euler-Maruyama); the "
        "Fokker-Planck equation at the level of its statement.",
        outcomes=(
            "build an interpolant between two densities and derive its velocity and score",
            "learn both with quadratic losses and sample with the ODE and a family of SDEs",
            "explain why the SDE controls the likelihood where the ODE does not",
        ),
        hours=3.5,
        references=(
            Reference(
                "M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden",
                "Stochastic interpolants: a unifying framework for flows and diffusions",
                2023,
                ARXIV + "2303.08797",
            ),
        ),
    ),
    3: Plan(
        requires=(0, 2),
        background="Conditional expectation as least-squares regression.",
        outcomes=(
            "train a rectified flow and measure how straight its paths are",
            "reflow a coupling and distil a one-step generator from it",
            "compare few-step samplers with distances that have error bars",
        ),
        hours=3.0,
        references=(
            Reference(
                "X. Liu, C. Gong, Q. Liu",
                "Flow straight and fast: learning to generate and transfer data with "
                "rectified flow",
                2022,
                ARXIV + "2209.03003",
                "https://github.com/gnobitab/RectifiedFlow",
            ),
            Reference(
                "X. Liu, X. Zhang, J. Ma, J. Peng, Q. Liu",
                "InstaFlow: one step is enough for high-quality diffusion-based "
                "text-to-image generation",
                2023,
                ARXIV + "2309.06380",
                "https://github.com/gnobitab/InstaFlow",
            ),
        ),
    ),
    4: Plan(
        requires=(1, 3),
        background="The EDM probability-flow ODE and Heun sampler (chapter 01); distilling a "
        "flow into a one-step generator (chapter 03).",
        outcomes=(
            "write the CTM jump G(x_t, t, s) and say why g(x, t, t) is the denoiser",
            "derive the exact jump of Gaussian data and check that gamma-sampling keeps the "
            "marginals",
            "train CTM and consistency-model students of an exact teacher and compare them "
            "across the number of steps",
        ),
        hours=3.0,
        references=(
            Reference(
                "D. Kim, C.-H. Lai, W.-H. Liao, N. Murata, Y. Takida, T. Uesaka, Y. He, "
                "Y. Mitsufuji, S. Ermon",
                "Consistency trajectory models: learning probability flow ODE trajectory of "
                "diffusion",
                2023,
                ARXIV + "2310.02279",
                "https://github.com/sony/ctm",
            ),
            Reference(
                "Y. Song, P. Dhariwal, M. Chen, I. Sutskever",
                "Consistency models",
                2023,
                ARXIV + "2303.01469",
                "https://github.com/openai/consistency_models",
            ),
        ),
    ),
    5: Plan(
        requires=(1, 2),
        background="Linear SDEs and their Gaussian marginals (chapters 01-02); what an "
        "order of convergence is (a log-log slope).",
        outcomes=(
            "derive the marginal and the log-SNR form of a mean-reverting SDE, and the "
            "first-order MR Sampler update by variation of constants",
            "measure a solver's order and the NFE it needs against Euler-Maruyama with an "
            "exact denoiser",
            "explain why a noise-prediction network fails near t = T and train a restoration "
            "model that does not",
        ),
        hours=3.0,
        references=(
            Reference(
                "A. Li, W. Fang, H. Zhao, L. Lu, G. Yang, M. Xu",
                "MRS: a fast sampler for mean reverting diffusion based on ODE and SDE solvers",
                2025,
                ARXIV + "2502.07856",
                "https://github.com/grrrute/mr-sampler",
            ),
            Reference(
                "Z. Luo, F. K. Gustafsson, Z. Zhao, J. Sjolund, T. B. Schon",
                "Image restoration with mean-reverting stochastic differential equations",
                2023,
                ARXIV + "2301.11699",
                "https://github.com/Algolzw/image-restoration-sde",
            ),
        ),
    ),
    6: Plan(
        requires=(4, 5),
        background="Consistency models (chapter 04); conditional restoration and PSNR/SSIM "
        "(chapter 05); conditioning a Gaussian on a linear observation.",
        outcomes=(
            "derive the exact one-step super-resolution map of a linear-Gaussian problem "
            "(posterior mean plus posterior-covariance-shaped noise)",
            "write consistency training along the HR <-> noisy-LRup trajectory and explain "
            "why a coarse grid (N = 3) converges to N Euler steps, not to the exact map",
            "compare one-step CT, CT + DTM, L1 regression and multi-step diffusion by PSNR, "
            "sharpness, Frechet distance and latency, with standard errors",
        ),
        hours=3.0,
        references=(
            Reference(
                "W. You, M. Zhang, L. Zhang, X. Zhou, K. Shi, S. Gu",
                "Consistency trajectory matching for one-step generative super-resolution",
                2025,
                ARXIV + "2503.20349",
                "https://github.com/LabShuHangGU/CTMSR",
            ),
        ),
    ),
    7: Plan(
        requires=(1, 3),
        background="The probability-flow ODE of a diffusion and its noise predictor (chapters "
        "01, 03); reverse-mode automatic differentiation (a vector-Jacobian product).",
        outcomes=(
            "derive the gradient of a loss on a generated sample with respect to the initial "
            "noise, the conditioning and the weights by the adjoint ODE, and check it against "
            "the closed form on Gaussian data",
            "measure peak memory and time of naive backpropagation and the adjoint against "
            "the number of steps, and say why the measurement can be trusted",
            "fine-tune a model through its sampler for a differentiable goal, and optimise the "
            "noise to change a classifier's decision (a security audit)",
        ),
        hours=3.0,
        references=(
            Reference(
                "J. Pan, J. H. Liew, V. Y. F. Tan, J. Feng, H. Yan",
                "AdjointDPM: adjoint sensitivity method for gradient backpropagation of "
                "diffusion probabilistic models",
                2023,
                ARXIV + "2307.10711",
                "https://github.com/HanshuYAN/AdjointDPM",
            ),
        ),
    ),
    8: Plan(
        requires=(1, 3),
        background="The probability-flow ODE of a diffusion, DDIM and its noise predictor "
        "(chapters 01, 03); Langevin dynamics along a score.",
        outcomes=(
            "edit a corrupted image blindly with CODE: invert it with the PF-ODE to a level, "
            "run Langevin steps there with sigma^2-scaled step sizes, decode, and compare with "
            "SDEdit",
            "derive the Gaussian CODE channel (gain and noise of encode, Langevin and decode) "
            "and its fidelity-realism trade-off, and check it against simulation",
            "use the confidence-interval clipping of latents and measure when it helps",
        ),
        hours=3.0,
        references=(
            Reference(
                "T. van Delft, T. Martorella, A. Alahi",
                "CODE: confident ordinary differential editing",
                2024,
                ARXIV + "2408.12418",
                "https://github.com/vita-epfl/CODE",
            ),
        ),
    ),
    9: Plan(
        requires=(0, 3),
        background="Causal attention in sequence models (softmax attention, masks, key/value "
        "caches); linear attention at the level of its definition.",
        outcomes=(
            "build training sequences of same-class images at sorted noise levels and train a "
            "flow model that is causal across them",
            "derive the recurrent state of gated linear attention and check its chunk-parallel "
            "and recurrent forms against each other",
            "generate autoregressively over denoising steps and measure what the context and "
            "the constant-size state change (quality, cost per step)",
        ),
        hours=3.0,
        references=(
            Reference(
                "M. Hui, R.-J. Zhu, S. Yang, Y. Zhang, Z. Wang, Y. Zhou, J. Eshraghian, C. Xie",
                "ARFlow: autoregressive flow with hybrid linear attention",
                2025,
                ARXIV + "2501.16085",
                "https://github.com/TheFllood/ARFlow",
            ),
        ),
    ),
    10: Plan(
        requires=(2, 3),
        background="Neural ODEs; Bezier curves; linear least squares; 2x2 matrices "
        "(rotations, the polar decomposition).",
        outcomes=(
            "animate a triangle mesh from keypoint handles with cubic Bezier paths, ARAP "
            "deformation and a Poisson solve, and test each against independent numerics",
            "distil a motion prior into an animation by score distillation from a flow-"
            "matching model, and compute that model's exact log-likelihood",
            "measure what temporal Jacobians (a neural ODE over per-triangle Jacobians) change "
            "in jerk, distortion and bone lengths, with standard errors",
        ),
        hours=3.0,
        references=(
            Reference(
                "A. Khandelwal",
                "FlexiClip: Locality-Preserving Free-Form Character Animation",
                2025,
                ARXIV + "2501.08676",
            ),
            Reference(
                "R. Wu, W. Su, K. Ma, J. Liao",
                "AniClipart: Clipart Animation with Text-to-Video Priors",
                2024,
                ARXIV + "2404.12347",
            ),
        ),
    ),
    11: Plan(
        requires=(1, 2),
        background="The continuity equation; scores of Gaussians (chapter 01); optical flow "
        "as a picture; a two-sample test and its type-I error; AUROC, recall and F1.",
        outcomes=(
            "derive the normalized spatiotemporal gradient from the continuity equation and "
            "show v^T NSG = -1 for divergence-free motion (and why a zoom breaks it)",
            "estimate NSG maps of a video from a frame model's score and central temporal "
            "differences, with a documented guard against near-zero denominators",
            "train a deep-kernel MMD for test power, check its type-I error by permutations, "
            "and measure a detector's AUROC, recall and F1 against a frame-only baseline, "
            "across reference-set sizes and unseen fake types, with standard errors",
        ),
        hours=3.0,
        references=(
            Reference(
                "S. Zhang, Z. Lian, J. Yang, D. Li, G. Pang, F. Liu, B. Han, S. Li, M. Tan",
                "Physics-driven spatiotemporal modeling for AI-generated video detection",
                2025,
                ARXIV + "2510.08073",
                "https://github.com/ZSHsh98/NSG-VD",
            ),
            Reference(
                "F. Liu, W. Xu, J. Lu, G. Zhang, A. Gretton, D. J. Sutherland",
                "Learning deep kernels for non-parametric two-sample tests",
                2020,
                ARXIV + "2002.09116",
                "https://github.com/fengliu90/DK-for-TST",
            ),
        ),
    ),
    12: Plan(
        requires=(0, 2),
        background="Fokker-Planck equation and its stationary probability current; the "
        "Ornstein-Uhlenbeck process; Lyapunov equations. The chapter's first section is a "
        "bridge, but it asks more physics than the others: advanced.",
        outcomes=(
            "compute the entropy production rate of a linear active system in closed form",
            "learn a stationary score from samples and turn it into the probability current",
            "split the entropy production into particles, phases and degrees of freedom",
        ),
        hours=4.0,
        references=(
            Reference(
                "N. M. Boffi, E. Vanden-Eijnden",
                "Deep learning probability flows and entropy production rates in active matter",
                2023,
                ARXIV + "2309.12991",
            ),
        ),
        advanced=True,
    ),
}

# a suggested plan for a term: (week, chapters, what the week is about)
WEEKS: tuple[tuple[int, tuple[int, ...], str], ...] = (
    (1, (0, 1), "probability flows; the Gaussian case solved exactly"),
    (2, (1,), "a trained denoiser against the theory"),
    (3, (2,), "interpolants: one pair of fields, many samplers"),
    (4, (3,), "straight paths, reflow and one-step distillation"),
    (5, (4, 5), "few-step samplers: consistency trajectories, mean-reverting solvers"),
    (6, (7, 8), "gradients through samplers; editing with the PF-ODE"),
    (7, (6, 9, 10, 11), "applications: super-resolution, video, animation, detection"),
    (8, (12,), "probability flows in physics: entropy production (advanced)"),
)


def _title(number: int) -> str:
    if number == FRONT_DOOR:
        return "Start here"
    ch = next(c for c in course.OUTLINE if c.number == number)
    return ch.title


def _link(number: int) -> str:
    """The chapter's title, linked to its notebook when it exists (relative link: works in
    JupyterLab and in Voila's /voila/render/ alike)."""
    slug = "start_here" if number == FRONT_DOOR else _slug(number)
    path = course.notebooks().get(slug)
    text = f"{number:02d} {html.escape(_title(number))}"
    return f'<a href="{path.name}">{text}</a>' if path else f"{text} (planned)"


def _slug(number: int) -> str:
    return next(c.slug for c in course.OUTLINE if c.number == number)


def _number(slug: str) -> int:
    if slug == "start_here":
        return FRONT_DOOR
    ch = course.chapter(slug)
    if ch is None:
        raise KeyError(f"no chapter {slug!r} in the course outline")
    return ch.number


def front_matter(slug: str) -> str:
    """HTML for the top of a chapter notebook: the papers it follows (with links),
    prerequisites (the chapters that provide them, and outside background), what the
    student can do afterwards, and the study time."""
    plan = PLANS[_number(slug)]
    rows = []
    if plan.references:
        refs = "".join(f"<li>{r.html()}</li>" for r in plan.references)
        rows.append(f"<b>Papers.</b><ul>{refs}</ul>")
    needs = ", ".join(_link(n) for n in plan.requires) or "none"
    rows.append(f"<b>Builds on:</b> {needs}.")
    if plan.background:
        rows.append(f"<b>Background assumed:</b> {html.escape(plan.background)}")
    if plan.outcomes:
        items = "".join(f"<li>{html.escape(o)}</li>" for o in plan.outcomes)
        rows.append(f"<b>Afterwards you can:</b><ul>{items}</ul>")
    rows.append(
        f"<b>Study time:</b> about {plan.hours:g} h at scale cpu, exercises included. "
        'Notation: <a href="notation.ipynb">the course notation</a>; course map: '
        '<a href="syllabus.ipynb">the syllabus</a>.'
    )
    return "<div class='pflow-front-matter'>" + "<br>".join(rows) + "</div>"


def course_map_html() -> str:
    """One row per chapter: what it builds on, the background it assumes, study time."""
    head = "<tr><th>chapter</th><th>builds on</th><th>background assumed</th><th>hours</th></tr>"
    body = []
    for number in sorted(PLANS):
        plan = PLANS[number]
        needs = ", ".join(f"{n:02d}" for n in plan.requires) or "-"
        mark = " <b>(advanced)</b>" if plan.advanced else ""
        background = html.escape(plan.background) or "-"
        body.append(
            f"<tr><td>{_link(number)}{mark}</td><td>{needs}</td><td>{background}</td>"
            f"<td>{plan.hours:g}</td></tr>"
        )
    return f"<table class='pflow-course-map'>{head}{''.join(body)}</table>"


def plan_html() -> str:
    """The suggested eight-week plan as a table."""
    head = "<tr><th>week</th><th>chapters</th><th>about</th><th>hours</th></tr>"
    body = []
    for week, numbers, about in WEEKS:
        hours = sum(PLANS[n].hours for n in numbers)
        links = ", ".join(_link(n) for n in numbers)
        body.append(
            f"<tr><td>{week}</td><td>{links}</td><td>{html.escape(about)}</td>"
            f"<td>{hours:g}</td></tr>"
        )
    return f"<table class='pflow-plan'>{head}{''.join(body)}</table>"


def check() -> list[str]:
    """What is inconsistent between the plans, the weeks and the outline (empty: nothing).

    Every outline chapter and the front door have a plan; prerequisites are earlier
    chapters; every chapter that exists has outcomes, references (except the front door)
    and a study time; every chapter appears in the weekly plan exactly once, after the
    weeks of the chapters it builds on."""
    problems = []
    numbers = {FRONT_DOOR, *(c.number for c in course.OUTLINE)}
    if set(PLANS) != numbers:
        problems.append(f"plans {sorted(PLANS)} != chapters {sorted(numbers)}")
    present = {_number(s) for s in course.notebooks()}
    week_of: dict[int, int] = {}
    for week, chapters, _ in WEEKS:
        for n in chapters:
            if n in week_of and n not in (1,):  # chapter 01 spans two weeks
                problems.append(f"chapter {n:02d} planned in weeks {week_of[n]} and {week}")
            week_of.setdefault(n, week)
    for n, plan in PLANS.items():
        for r in plan.requires:
            if r >= n:
                problems.append(f"chapter {n:02d} builds on a later chapter {r:02d}")
        if n not in week_of:
            problems.append(f"chapter {n:02d} is in no week of the plan")
        elif any(week_of.get(r, 0) > week_of[n] for r in plan.requires):
            problems.append(f"chapter {n:02d} comes before a chapter it builds on")
        if n in present:
            if not plan.outcomes or plan.hours <= 0:
                problems.append(f"chapter {n:02d} exists but has no outcomes or study time")
            if n != FRONT_DOOR and not plan.references:
                problems.append(f"chapter {n:02d} exists but cites no paper")
    return problems

"""The playground (pflow_explore.playground, widgets.playground, notebooks/playground.ipynb):
each method learns the drawn points (its samples near the two-sample floor), training can be
cancelled and reports progress, bad input is a message, and in the browser a click adds
points and Train leads to trajectories whose slider moves them."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from pflow_explore import playground as pg
from pflow_explore.training import fit
from pflow_explore.widgets.playground import Playground

SMALL = pg.PlaygroundSettings(steps=300, n_samples=300, n_steps=20, reflow_pairs=500)


@pytest.fixture(scope="module")
def blobs():
    return pg.preset_points("eight_gaussians", 600, seed=3)


@pytest.mark.parametrize("method", pg.METHODS)
def test_each_method_learns_the_points(method, blobs):
    trained = pg.train(blobs, method, SMALL)
    times, states = trained.trajectories()
    n_steps = SMALL.n_steps * (pg.SDE_STEPS_PER_ODE_STEP if method == pg.DIFFUSION[1] else 1)
    assert states.shape == (n_steps + 1, SMALL.n_samples, 2) and len(times) == len(states)
    distance, floor = trained.quality()
    # negative control: the noise the sampler starts from, against the same points
    noise = pg.energy_distance(states[0] / states[0].std(), blobs)
    assert distance < 4 * floor < noise, (distance, floor, noise)


def test_reflow_straightens_the_paths(blobs):
    from pflow_explore.trajectories import straightness

    one = pg.train(blobs, "rectified flow", SMALL).trajectories()
    two = pg.train(blobs, "rectified flow + reflow", SMALL).trajectories()
    assert straightness(two[1], two[0]) < 0.5 * straightness(one[1], one[0])


def test_progress_and_cancel(blobs):
    seen, cancel = [], threading.Event()

    def on_progress(stage, step, loss):
        seen.append((stage, step, loss))
        if step == 10:
            cancel.set()

    with pytest.raises(pg.Cancelled, match="step 11"):
        pg.train(blobs, "rectified flow", SMALL, on_progress, cancel)
    assert [s for _, s, _ in seen] == list(range(11)) and all(np.isfinite(l) for *_, l in seen)


@pytest.mark.parametrize(
    ("points", "says"),
    [
        (np.zeros((5, 2)), "at least 20 points"),
        (np.zeros((30, 3)), r"shape \(n, 2\)"),
        (np.full((30, 2), np.nan), "NaN"),
    ],
)
def test_bad_points_are_refused_with_the_reason(points, says):
    with pytest.raises(ValueError, match=says):
        pg.train(points, "rectified flow", SMALL)


def test_fit_callback_sees_every_step_and_can_stop_it():
    model = torch.nn.Linear(2, 1)
    steps = []

    def loss_fn(m, step):
        return (m(torch.ones(4, 2)) ** 2).mean()

    fit(model, loss_fn, steps=5, progress=False, callback=lambda i, v: steps.append(i))
    assert steps == [0, 1, 2, 3, 4]

    def stop(i, v):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, loss_fn, steps=5, progress=False, callback=stop)


def test_widget_draws_trains_and_keeps_the_last_model_on_bad_input():
    w = Playground(SMALL, preset="two_moons", n_preset=400)
    assert len(w.points) == 400
    w.add_blob(2.0, 2.0)
    w.fill([0.0, 0.5], [1.0, 1.0])
    assert len(w.points) == 400 + 12 + 2
    assert w.train(wait=True) and w.result is not None and w.explorer is not None
    assert "energy distance" in w.status.value and w.explorer.n_steps == SMALL.n_steps
    model = w.result
    w.set_points(np.zeros((3, 2)))  # too few: a message, the model stays
    assert not w.train(wait=True)
    assert "at least 20 points" in w.message.value and w.result is model
    w.steps_box.value = 0
    w.set_points(pg.preset_points("rings", 300).numpy())
    assert not w.train(wait=True) and "steps must be" in w.message.value


def test_widget_cancel_keeps_the_last_model():
    w = Playground(pg.PlaygroundSettings(steps=20000), preset="checkerboard")
    assert w.train()
    w.cancel()
    w.join(60)
    assert not w.training and isinstance(w.error, pg.Cancelled) and w.result is None
    assert "Nothing was trained" in w.message.value and w.train_button.description == "Train"


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_playground_page_trains_and_steps(server, browser, watch_console_errors):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    console = watch_console_errors(page)
    page.goto(f"{server}/voila/render/playground.ipynb", timeout=120_000)
    page.wait_for_selector(".pflow-train", timeout=150_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
    page.wait_for_timeout(1000)
    title = page.locator(".js-plotly-plot .gtitle").first
    before = title.text_content()
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.wait_for_function(
        f"() => document.querySelector('.js-plotly-plot .gtitle').textContent !== {before!r}",
        timeout=20_000,
    )  # a click added points: the count in the title changed
    page.locator(".pflow-train").click()
    page.wait_for_selector(".pflow-status:has-text('energy distance')", timeout=120_000)
    slider = page.locator(".widget-slider .noUi-handle").first
    slider.wait_for(timeout=30_000)
    data = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
      el => JSON.stringify((el.data || []).map(t => [t.x, t.y])))"""
    first = page.evaluate(data)
    slider.focus()
    page.keyboard.press("Home")
    same = json.dumps(first, separators=(",", ":"))  # as JSON.stringify writes it
    page.wait_for_function(f"(b) => JSON.stringify(({data})()) !== b", arg=same, timeout=20_000)
    assert page.locator("#pflow-page-failure, .pflow-figure-failed").count() == 0
    assert not console, console[:5]
    page.close(run_before_unload=True)


def test_velocity_is_the_samplers_field(blobs):
    """One Euler step along ``velocity`` from the sampler's state at step i lands on its
    state at step i + 1 (the rectified flow's sampler is Euler on that field)."""
    trained = pg.train(blobs, "rectified flow", SMALL)
    times, states = trained.trajectories(50)
    i = 7
    step = states[i] + float(times[i + 1] - times[i]) * trained.velocity(states[i], float(times[i]))
    torch.testing.assert_close(step, states[i + 1], rtol=1e-4, atol=1e-5)
    edm_model = pg.train(blobs, "diffusion (EDM)", SMALL)
    x = torch.randn(10, 2)
    # dx/dsigma = (x - D) / sigma: at large sigma D is near the data mean, so v ~ x / sigma
    v = edm_model.velocity(x * 50, 50.0)
    assert torch.allclose(v, x, atol=0.2)


def test_field_view_follows_the_explorers_step(blobs):
    w = Playground(SMALL, preset=None)
    w.set_points(blobs.numpy())
    assert w.train(wait=True)
    assert w.field_box.children == ()  # off until asked
    w.show_field.value = True
    assert w.field_box.children == (w.field_figure,)
    w.explorer.step_to(0)
    at_start = list(w.field_figure.data[0].x)
    w.explorer.step_to(w.explorer.n_steps)
    assert list(w.field_figure.data[0].x) != at_start
    assert "t = 1" in w.field_figure.layout.title.text
    assert len(w.field_figure.data[1].x) == 15 * 15 * 7  # one arrow of 7 entries per grid point


def test_interpolant_ode_follows_its_velocity_and_the_sde_is_noisy(blobs):
    """eps = 0: the sampler is rk4 on ``velocity`` (one rk4 step from state i reproduces
    state i + 1); eps > 0: the SDE adds noise (two seeds give different paths, one seed the
    same); a negative eps is refused with its reason."""
    from dataclasses import replace

    from pflow_explore import solvers

    quick = replace(SMALL, steps=50)  # the sampler is under test, not the fit
    ode = pg.train(blobs, pg.INTERPOLANT, replace(quick, eps=0.0))
    times, states = ode.trajectories(40)
    i = 5
    f = lambda x, t: ode.velocity(x, float(t))  # noqa: E731
    step = solvers.odeint(f, states[i], times[i : i + 2], "rk4").x
    torch.testing.assert_close(step, states[i + 1], rtol=1e-4, atol=1e-5)
    sde = pg.train(blobs, pg.INTERPOLANT, quick)
    a, b, c = (
        sde.trajectories(40, seed=1)[1],
        sde.trajectories(40, seed=2)[1],
        sde.trajectories(40, seed=1)[1],
    )
    assert torch.equal(a, c) and not torch.allclose(a[-1], b[-1])
    with pytest.raises(ValueError, match="eps"):
        pg.PlaygroundSettings(eps=-1.0)


def test_the_diffusion_sde_sampler_draws_noise_per_seed(blobs):
    """One EDM model, two samplers: from the same start the reverse SDE (ancestral steps)
    ends elsewhere than the PF-ODE (Heun), the same for the same seed."""
    from dataclasses import replace

    quick = replace(SMALL, steps=50)
    ode, sde = (pg.train(blobs, method, quick) for method in pg.DIFFUSION)
    weights = zip(ode.model.parameters(), sde.model.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in weights)  # the same training
    a, c = (sde.trajectories(30, seed=1)[1] for _ in range(2))
    o = ode.trajectories(30, seed=1)[1]
    assert torch.equal(a, c) and a.shape[0] == SMALL.n_steps * pg.SDE_STEPS_PER_ODE_STEP + 1
    assert torch.equal(a[0], o[0]) and not torch.allclose(a[-1], o[-1], atol=1e-3)

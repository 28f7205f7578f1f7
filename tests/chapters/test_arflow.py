"""Chapter 09 arflow: settings, the gpu preset's model for one training step on the CPU, a
tiny end-to-end run, the exercises' references against the package's attention, and
negative controls for the claims (an untrained model, a model without context, a wrong
recurrence, a timer that grows, each must make its claim come out NO). The method is tested
in tests/test_ar_flow.py and tests/nets/test_hybrid_attention.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import ar_flow as af
from pflow_explore.chapters import arflow as C
from pflow_explore.claims import Claim
from pflow_explore.exercises import arflow as ex
from pflow_explore.nets.hybrid_attention import chunk_decays

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="lengths"):
        C.settings("tiny", lengths=(3, 5))
    with pytest.raises(ValueError, match="patch"):
        C.settings("tiny", patch=3)
    with pytest.raises(ValueError, match="cost_counts"):
        C.settings("tiny", cost_counts=(1, 4))


def test_gpu_preset_model_takes_a_training_step_on_cpu():
    s = C.settings("gpu")
    m = C.make_model(s)
    x, y = C.data(s, "train")
    assert x.shape[1] == 32 * 32 and m.tokens == 64
    loss = af.objective(x, y, max(s.lengths), 10, torch.Generator().manual_seed(0))(m, 0)
    loss.backward()
    assert torch.isfinite(loss) and m.readout.weight.grad.abs().sum() > 0


def test_tiny_run_claims_and_figures(tiny_results):
    s, r = tiny_results
    cl = C.claims(r)
    assert all(isinstance(c, Claim) for c in cl) and len(cl) == 9
    assert all(c.holds for c in cl if c.name.startswith("identity"))
    assert set(r.lengths.fd) >= {"length 1 (plain flow)", "length 5", "untrained", "data"}
    assert r.lengths.fd["data"] < r.lengths.fd["untrained"]
    for fig in C.figures(r).values():
        assert isinstance(fig, go.Figure)
    assert isinstance(C.preview(), go.Figure)


def test_untrained_models_make_the_quality_claims_fail(tiny_results):
    """Negative control: every length's model untrained (the same zero velocity): no ordering,
    no use of the context."""
    s, _ = tiny_results
    s = replace(s, n_eval=60, n_boot=4)
    untrained = {k: C.make_model(s) for k in s.lengths}
    res = C.evaluate_lengths(s, untrained)
    verdicts = {c.name: c.holds for c in C.claims_lengths(res, s)}
    assert not any(verdicts.values()), verdicts


def test_identity_claims_fail_on_wrong_numbers():
    bad = C.IdentityCheck(1e-3, 0.5, 0.0, 1e-2, 1e-3, 3)
    assert not any(c.holds for c in C.claims_identities(bad, "tiny"))


def test_cost_claims_fail_when_the_recurrent_step_grows():
    grow = C.CostResult([1, 10, 20], {"recurrent state (hybrid)": [1.0, 2.0, 3.0],
                                     "full attention": [1.0, 1.0, 1.0]},
                        {"recurrent state (hybrid)": 0.1, "full attention": 0.0},
                        {"recurrent state (hybrid)": 2.0, "full attention": 0.0}, 4)  # fmt: skip
    assert not any(c.holds for c in C.claims_cost(grow, "tiny"))


def test_exercise_references_match_the_attention_layer():
    gen = torch.Generator().manual_seed(5)
    q, k, v, g = ex.cross_inputs(gen)
    decays = chunk_decays(g.mean(1))  # the parallel form of the same path
    states = torch.einsum("ced,edf->cdf", decays, torch.einsum("cld,clf->cdf", k, v))
    parallel = (q * g.cumsum(1).exp()) @ states
    assert torch.allclose(ex.CROSS.reference(q, k, v, g), parallel, atol=1e-12)
    m, z, y, n = ex.generate_inputs(gen)
    assert torch.allclose(ex.GENERATE.reference(m, z, y, n), af.generate_parallel(m, z, y, n))

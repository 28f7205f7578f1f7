import pytest
import torch
from torch import nn

from pflow_explore import training


def regression_loss(target_w):
    def loss_fn(model, step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 3, generator=g)
        return ((model(x) - x @ target_w) ** 2).mean()

    return loss_fn


def make_model():
    torch.manual_seed(0)
    return nn.Linear(3, 2, bias=False)


def test_fit_learns_and_records():
    w = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    res = training.fit(make_model(), regression_loss(w), steps=300, lr=5e-2, progress=False)
    assert len(res.losses) == 300
    assert res.losses[-1] < 1e-2 * res.losses[0]
    assert torch.allclose(res.model.weight.T, w, atol=0.05)


def test_fit_is_repeatable():
    w = torch.randn(3, 2)
    a = training.fit(make_model(), regression_loss(w), steps=20, progress=False)
    b = training.fit(make_model(), regression_loss(w), steps=20, progress=False)
    assert a.losses == b.losses


def test_ema_smooths_weights():
    w = torch.randn(3, 2)
    plain = training.fit(make_model(), regression_loss(w), steps=50, lr=1e-2, progress=False)
    ema = training.fit(
        make_model(), regression_loss(w), steps=50, lr=1e-2, ema_decay=0.9, progress=False
    )
    # the EMA model lags behind the raw weights, so it is further from the target
    err = lambda m: (m.weight.T - w).norm().item()
    assert err(ema.model) > err(plain.model)


def test_nan_guard_names_step():
    def loss_fn(model, step):
        out = model(torch.ones(1, 3)).sum()
        return out * float("nan") if step == 7 else out**2

    with pytest.raises(training.TrainingDiverged, match="at step 7"):
        training.fit(make_model(), loss_fn, steps=20, progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        training.fit(make_model(), regression_loss(torch.randn(3, 2)), steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        training.fit(make_model(), regression_loss(torch.randn(3, 2)), steps=1, ema_decay=1.5)


def test_fit_cached_trains_once(data_dir):
    w = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    kw = dict(steps=50, lr=5e-2, progress=False)
    first = training.fit_cached("t", "lin", {"seed": 2}, make_model, regression_loss(w), **kw)
    second = training.fit_cached("t", "lin", {"seed": 2}, make_model, regression_loss(w), **kw)
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.model.weight, second.model.weight)
    assert first.losses == second.losses
    third = training.fit_cached(
        "t", "lin", {"seed": 2}, make_model, regression_loss(w), steps=60, lr=5e-2, progress=False
    )
    assert not third.from_cache  # other fit arguments, other key


def test_fit_cached_retrains_when_architecture_changed(data_dir):
    w = torch.randn(3, 2)
    training.fit_cached("t", "m", {}, make_model, regression_loss(w), steps=5, progress=False)
    bigger = lambda: nn.Linear(3, 2, bias=True)
    res = training.fit_cached("t", "m", {}, bigger, regression_loss(w), steps=5, progress=False)
    assert not res.from_cache and res.model.bias is not None

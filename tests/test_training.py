import math

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


def _old_fit(model, loss_fn, steps, lr, ema_decay=None, grad_clip=1.0, warmup=0, cosine=False):
    """fit as it was written with torch's own pieces (per-tensor AdamW on the CPU,
    nn.utils.clip_grad_norm_, AveragedModel): the reference the faster fit must equal."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            (min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0)
            * (0.5 * (1 + math.cos(math.pi * i / steps)) if cosine else 1.0)
        ),
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None
    losses = []
    for i in range(steps):
        loss = loss_fn(model, i)
        losses.append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return losses, model


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(grad_clip=None), dict(ema_decay=0.9, warmup=5, cosine=True, grad_clip=0.05)],
)
def test_fit_equals_torch_reference_bit_for_bit(kw):
    from pflow_explore.nets import MLP

    def loss_fn(model, step):
        g = torch.Generator().manual_seed(step)
        x, t = torch.randn(32, 2, generator=g), torch.rand(32, generator=g)
        return ((model(x, t) - x.flip(1) * t[:, None]) ** 2).mean()

    torch.manual_seed(3)
    ref_losses, ref = _old_fit(MLP(2, hidden=32, depth=2, time_dim=8), loss_fn, 40, 3e-2, **kw)
    torch.manual_seed(3)
    res = training.fit(
        MLP(2, hidden=32, depth=2, time_dim=8), loss_fn, steps=40, lr=3e-2, progress=False, **kw
    )
    assert res.losses == ref_losses
    for (name, a), b in zip(ref.state_dict().items(), res.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_clip_grad_norm_matches_torch_and_leaves_small_gradients():
    gen = torch.Generator().manual_seed(0)
    ps = [nn.Parameter(torch.randn(s, generator=gen)) for s in [(3, 4), (4,), (2, 2)]]
    for p in ps:
        p.grad = 5 * torch.randn(p.shape, generator=gen)
    ours = [p.detach().clone().requires_grad_() for p in ps]
    for o, p in zip(ours, ps, strict=True):
        o.grad = p.grad.clone()
    total = torch.cat([p.grad.flatten() for p in ps]).norm()  # independent: one long vector
    nn.utils.clip_grad_norm_(ps, 1.0)
    training.clip_grad_norm(ours, 1.0)
    for o, p in zip(ours, ps, strict=True):
        assert torch.equal(o.grad, p.grad)
    clipped = torch.cat([o.grad.flatten() for o in ours]).norm()
    assert abs(float(clipped) - 1.0) < 1e-5 and float(total) > 1
    before = [o.grad.clone() for o in ours]
    training.clip_grad_norm(ours, 10.0)  # norm 1 < 10: unchanged
    assert all(torch.equal(a, o.grad) for a, o in zip(before, ours, strict=True))


def test_ema_is_the_exponential_average_after_the_first_step():
    p = nn.Parameter(torch.zeros(2))
    ema = training.EMA([p], 0.5)
    history = [1.0, 3.0, -1.0]
    for value in history:
        p.data.fill_(value)
        ema.update()
    # first update copies (1), then 0.5 * 1 + 0.5 * 3 = 2, then 0.5 * 2 + 0.5 * (-1) = 0.5
    ema.copy_to_params()
    assert torch.equal(p.data, torch.full((2,), 0.5))

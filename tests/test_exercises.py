import torch

from pflow_explore.exercises import check


def reference(x, s):
    return x / (1 + s**2)


def inputs(gen):
    return torch.randn(4, 3, generator=gen), float(torch.rand(1, generator=gen)) + 0.1


def test_correct_solution_passes():
    res = check(lambda x, s: x * (1 + s**2) ** -1, reference, inputs, name="shrink")
    assert res.passed and "5 random inputs" in res.message
    assert "&#10004;" in res._repr_html_()


def test_each_mistake_gets_its_own_message():
    cases = {
        "forgot return": (lambda x, s: None, "return"),
        "not written": (lambda x, s: (_ for _ in ()).throw(NotImplementedError()), "not written"),
        "crashes": (lambda x, s: x @ x, "raised RuntimeError"),
        "wrong shape": (lambda x, s: x.sum(0), "shape (3,)"),
        "nan": (lambda x, s: x / 0 * 0, "NaN"),
        "wrong value": (lambda x, s: x / (1 + s), "largest error"),
    }
    for label, (fn, expected) in cases.items():
        res = check(fn, reference, inputs, name=label)
        assert not res.passed, label
        assert expected in res.message, (label, res.message)
        assert "&#10008;" in res._repr_html_()


def test_error_is_located():
    def almost(x, s):
        out = reference(x, s).clone()
        out[2, 1] += 0.5
        return out

    res = check(almost, reference, inputs)
    assert "index (2, 1)" in res.message and "0.5" in res.message


def test_use_runs_the_learners_function_once_it_passes(capsys):
    from pflow_explore.exercises import start_here as ex

    def mine(x, t, D):
        return (x - D) / t

    assert ex.LINEAR_VELOCITY.use(mine) is mine
    assert "runs your linear_velocity" in capsys.readouterr().out

    def unwritten(x, t, D):
        raise NotImplementedError

    assert ex.LINEAR_VELOCITY.use(unwritten) is ex.LINEAR_VELOCITY.reference
    out = capsys.readouterr().out
    assert "runs the package's linear_velocity" in out and "not written yet" in out


def test_grade_raises_with_the_checkers_message():
    import pytest

    from pflow_explore.exercises import start_here as ex

    ex.EULER_TRAJECTORY.grade(ex.EULER_TRAJECTORY.reference, seed=3, trials=10)
    with pytest.raises(AssertionError, match="solver loop .*not written yet"):
        ex.EULER_TRAJECTORY.grade(lambda v, x, times: (_ for _ in ()).throw(NotImplementedError))

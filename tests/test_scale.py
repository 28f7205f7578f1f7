import pytest
import torch

from pflow_explore import scale


def test_resolution_order(monkeypatch):
    monkeypatch.delenv("PFLOW_SCALE", raising=False)
    assert scale.resolve_scale() == "cpu"
    assert scale.resolve_scale(None) == "cpu"
    monkeypatch.setenv("PFLOW_SCALE", "gpu")
    assert scale.resolve_scale(None) == "gpu"  # env beats the default
    assert scale.resolve_scale(None, "tiny") == "tiny"  # notebook parameter beats env
    assert scale.resolve_scale("cpu", "tiny") == "cpu"  # explicit argument beats parameter


def test_bad_scale_lists_valid(monkeypatch):
    monkeypatch.delenv("PFLOW_SCALE", raising=False)
    with pytest.raises(scale.ScaleError, match="tiny, cpu, gpu"):
        scale.resolve_scale("huge")
    monkeypatch.setenv("PFLOW_SCALE", "laptop")
    with pytest.raises(scale.ScaleError, match="laptop"):
        scale.resolve_scale()


def test_preset_picks_and_checks(monkeypatch):
    monkeypatch.delenv("PFLOW_SCALE", raising=False)
    presets = {"tiny": 1, "cpu": 2, "gpu": 3}
    assert scale.preset(presets) == 2
    assert scale.preset(presets, "tiny") == 1
    with pytest.raises(scale.ScaleError, match="gpu"):
        scale.preset({"tiny": 1, "cpu": 2})


def test_seed_everything_repeats():
    g = scale.seed_everything(123)
    a = (torch.randn(5), torch.randn(3, generator=g))
    g = scale.seed_everything(123)
    b = (torch.randn(5), torch.randn(3, generator=g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    scale.seed_everything(124)
    assert not torch.equal(a[0], torch.randn(5))
    with pytest.raises(ValueError):
        scale.seed_everything(-1)


def test_device():
    assert scale.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert scale.device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            scale.device("cuda")


@pytest.mark.gpu
def test_device_cuda():
    assert scale.device().type == "cuda"


def test_torch_threads_sets_and_restores():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with scale.torch_threads(1, blas=True):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with scale.torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), scale.torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"), scale.torch_threads(0):
        pass

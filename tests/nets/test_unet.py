from __future__ import annotations

import pytest
import torch

from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, conditioning
from pflow_explore.nets.unet import UNet


@pytest.mark.parametrize("size", [8, 16, 32])
def test_unet_shapes(size):
    torch.manual_seed(0)
    net = UNet(in_channels=1, base=8, time_dim=16)
    x = torch.randn(2, 1, size, size)
    assert net(x, 0.5).shape == x.shape
    assert net(x, torch.rand(2)).shape == x.shape


def test_unet_multichannel_and_rectangular():
    torch.manual_seed(0)
    net = UNet(in_channels=3, base=8, channel_mults=(1, 2), time_dim=16, attention=False)
    x = torch.randn(2, 3, 8, 12)
    assert net(x, 0.1).shape == x.shape


def test_default_unet_is_modest():
    n_params = sum(p.numel() for p in UNet().parameters())
    assert 1e5 < n_params < 2e6


def test_bad_image_size_raises_value_error():
    net = UNet(base=8, time_dim=16)
    with pytest.raises(ValueError, match="divisible by 2\\^\\(levels-1\\) = 4"):
        net(torch.randn(1, 1, 10, 10), 0.5)
    deep = UNet(base=8, channel_mults=(1, 1, 1, 1), time_dim=16)
    with pytest.raises(ValueError, match="= 8"):
        deep(torch.randn(1, 1, 12, 12), 0.5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(1, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(channel_mults=())


def test_class_conditioning_changes_output_and_none_is_null():
    torch.manual_seed(0)
    net = UNet(base=8, time_dim=16, n_classes=10)
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    a = net(x, t, torch.tensor([0, 1, 2]))
    b = net(x, t, torch.tensor([3, 4, 5]))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-5
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((3,), 10)))
    with pytest.raises(ValueError, match="n_classes=None"):
        UNet(base=8, time_dim=16)(x, t, torch.zeros(3, dtype=torch.long))


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = UNet(base=8, time_dim=16, n_classes=3, n_res=2)
    x = torch.randn(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 3])  # 3 = the null class, so every embedding row is used
    net(x, torch.rand(4), y).square().sum().backward()
    missing = [
        name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0
    ]
    assert not missing, f"no gradient for {missing}"


def test_output_depends_on_time_and_is_batch_independent():
    torch.manual_seed(0)
    net = UNet(base=8, time_dim=16).eval()
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([0.2, 0.9])
    both = net(x, t)
    torch.testing.assert_close(both[1:], net(x[1:], t[1:]), rtol=1e-4, atol=1e-5)
    assert (net(x, 0.2) - net(x, 0.9)).abs().max() > 1e-5


def test_conditioning_is_the_sum_of_the_time_and_class_embeddings():
    torch.manual_seed(0)
    time, label = TimeEmbedding(16), ClassEmbedding(4, 16)
    like = torch.zeros(3, 1, 8, 8)
    t, y = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0, 3, 4])  # 4: the null class
    # the expected value from the embedding tables themselves: MLP of the features + a row
    expected = time.mlp(time.features(t)) + label.table.weight[y]
    torch.testing.assert_close(conditioning(time, label, t, y, like), expected)
    # a scalar time is broadcast over the batch; y=None is the null row for every sample
    c = conditioning(time, label, 0.5, None, like)
    half = time.mlp(time.features(torch.full((3,), 0.5)))
    torch.testing.assert_close(c, half + label.table.weight[4])
    # without a class embedding: the time part alone, and a y is refused, naming the net
    torch.testing.assert_close(conditioning(time, None, t, None, like), time.mlp(time.features(t)))
    with pytest.raises(ValueError, match="this UNet was built with n_classes=None"):
        conditioning(time, None, t, y, like, "UNet")


def test_unet_condition_is_the_shared_conditioning():
    torch.manual_seed(1)
    net = UNet(base=8, time_dim=16, n_classes=3)
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([2, 0])
    expected = (
        net.time_embedding.mlp(net.time_embedding.features(t))
        + (net.class_embedding.table.weight[y])
    )
    torch.testing.assert_close(net.condition(t, y, x), expected)

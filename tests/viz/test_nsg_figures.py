"""viz/nsg_figures.py: frames and NSG maps as one image, each tile scaled as its docstring says."""

from __future__ import annotations

import numpy as np
import torch

from pflow_explore.viz import nsg_figures as nf
from pflow_explore.viz.images import image_grid


def test_diverging_colours_are_blue_white_red():
    blue, white, red = nf.diverging_rgb([-1.0, 0.0, 1.0])
    assert blue[2] > blue[0] and red[0] > red[2]  # blue below 0, red above
    np.testing.assert_allclose(white, 2 * 247 / 255 - 1)  # ColorBrewer's near-white middle
    np.testing.assert_allclose(nf.diverging_rgb([-5.0, 5.0]), nf.diverging_rgb([-1.0, 1.0]))
    halfway = nf.diverging_rgb([0.1])[0]  # between the 6th and 7th stops, linearly
    stops = [np.array(c) / 127.5 - 1 for c in ((247, 247, 247), (253, 219, 199))]
    np.testing.assert_allclose(halfway, stops[0] + 0.5 * (stops[1] - stops[0]))


def test_frames_and_maps_are_one_image_with_each_tile_scaled_alone():
    g = torch.Generator().manual_seed(0)
    kinds, k, frames, size = ("real", "flicker"), 3, 4, 6
    videos = {n: 5 * torch.rand(k, frames, size, size, generator=g) + 2 for n in kinds}
    maps = {n: torch.randn(k, frames, size, size, generator=g) for n in kinds}
    fig = nf.frames_and_nsg_figure(videos, maps, index=1)
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    picture = np.asarray(fig.data[0].z)

    # the same tiles built independently: each frame to [-1, 1] by its own min and max,
    # each map divided by its own largest |value| and coloured
    tiles = []
    for n in kinds:
        v, m = videos[n][1].double().numpy(), maps[n][1].double().numpy()
        for f in v:
            gray = 2 * (f - f.min()) / (f.max() - f.min()) - 1
            tiles.append(np.repeat(gray[None], 3, axis=0))
        for f in m:
            tiles.append(np.moveaxis(nf.diverging_rgb(f / np.abs(f).max()), -1, 0))
    top = picture.shape[0] - image_grid(np.stack(tiles), nrow=2 * frames).shape[0]
    expected = image_grid(np.stack(tiles), nrow=2 * frames, top=top // len(kinds))
    np.testing.assert_array_equal(picture, expected)
    labels = [a.text for a in fig.layout.annotations]
    assert labels.count("real") == 1 and labels.count("flicker") == 1

"""The depth view: a turbo colour map over the surface's depth range, near red, far blue, empty space
black; and blends of two seeds."""
import numpy as np
import pytest
import torch

from pv3d_core.pipeline import FrameRenderer, RenderSettings
from pv3d_core.render import colormap


def test_turbo_runs_from_dark_blue_to_dark_red():
    c = colormap.turbo(torch.tensor([0.0, 0.5, 1.0, -3.0, 7.0]))
    assert c[0, 2] > c[0, 0] and c[2, 0] > c[2, 2] and c[1, 1] > 0.9       # blue, green, red
    assert torch.equal(c[3], c[0]) and torch.equal(c[4], c[2])             # clamped
    x = torch.linspace(0, 1, 257)
    assert (colormap.turbo(x)[1:] - colormap.turbo(x)[:-1]).abs().max() < 0.05   # no jumps


def test_depth_range_ignores_empty_space_and_rounds():
    d = torch.full((1, 1, 8, 8), 2.6)
    a = torch.zeros(1, 1, 8, 8)
    d[..., 2:6, 2:6] = torch.linspace(2.66, 2.88, 16).reshape(4, 4)
    a[..., 2:6, 2:6] = 1
    assert colormap.depth_range(d, a, (2.25, 3.3)) == (2.65, 2.9)
    assert colormap.depth_range(d, torch.zeros_like(a), (2.25, 3.3)) == (2.25, 3.3)


def test_depth_view_of_the_default_model(default_generator):
    r = FrameRenderer(default_generator)
    f = r.render(RenderSettings(seed=0, t=0.5, view="depth"))
    near, far = f.info["depth_range"]
    assert 2.3 < near < far < 3.2
    img = f.numpy().astype(float)
    n = img.shape[0]
    assert img[:6, :6].mean() < 40                      # empty space is dark
    centre = img[n // 2 - 6:n // 2 + 6, n // 2 - 6:n // 2 + 6]
    assert (centre.max(-1) - centre.min(-1)).mean() > 60    # the head is coloured
    assert r.render(RenderSettings(seed=0, t=0.5)).info == {}


def test_blends_move_between_two_seeds(default_generator):
    r = FrameRenderer(default_generator)
    a = r.render(RenderSettings(seed=0, t=0.5)).numpy().astype(float)
    b = r.render(RenderSettings(seed=5, t=0.5)).numpy().astype(float)
    assert np.abs(r.render(RenderSettings(seed=0, seed_b=5, blend=0.0, t=0.5)).numpy() - a).max() == 0
    assert np.abs(r.render(RenderSettings(seed=0, seed_b=5, blend=1.0, t=0.5)).numpy() - b).max() <= 1
    mid = r.render(RenderSettings(seed=0, seed_b=5, blend=0.5, t=0.5)).numpy().astype(float)
    assert np.abs(mid - a).mean() > 2 and np.abs(mid - b).mean() > 2
    m0 = r.render(RenderSettings(seed=0, motion_seed=1, t=0.8)).numpy().astype(float)
    m1 = r.render(RenderSettings(seed=0, motion_seed=1, motion_seed_b=7, motion_blend=1.0, t=0.8)).numpy()
    m7 = r.render(RenderSettings(seed=0, motion_seed=7, t=0.8)).numpy().astype(float)
    assert np.abs(m1 - m7).max() <= 1 and np.abs(m0 - m7).mean() > 0.5


@pytest.fixture(scope="module")
def default_generator():
    from pv3d_core.io import load_generator
    from pv3d_core.paths import default_checkpoint

    if not default_checkpoint().is_file():
        pytest.skip("the embedded default model is missing")
    return load_generator(default_checkpoint())

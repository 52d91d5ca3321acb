"""Winograd F(4x4, 3x3) convolutions (cuda/winograd_cpu.cpp via pv3d_core.nn.winograd) against float64
convolutions, the rules that choose them, and a whole tiny frame with them against the direct path."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pv3d_core import native
from pv3d_core.nn import winograd
from pv3d_core.nn.ops import conv2d_resample
from pv3d_core.render import cameras, cuda_ops

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler for the Winograd transforms")


@pytest.fixture(autouse=True)
def _switch_back():
    winograd.set_enabled(True)
    yield
    winograd.set_enabled(None)


def _nhwc(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)


def _rel_err(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("n,cin,h,w,cout,bias", [
    (1, 64, 64, 64, 64, True),       # the tiny preset's shapes
    (1, 128, 32, 32, 128, False),
    (1, 32, 16, 16, 64, True),
    (2, 24, 19, 23, 40, True),       # a batch, sides not a multiple of 4, channels not of 16
    (1, 16, 17, 16, 8, False),       # fewer output channels than one vector
])
def test_matches_a_float64_convolution(n, cin, h, w, cout, bias):
    x = _nhwc(n, cin, h, w)
    g = torch.Generator().manual_seed(1)
    wt = torch.randn(cout, cin, 3, 3, generator=g) / (9 * cin) ** 0.5
    b = torch.randn(cout, generator=g) if bias else None
    ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), padding=1)
    got = winograd.conv3x3(x, wt, b)
    assert got.shape == ref.shape and got.is_contiguous(memory_format=torch.channels_last)
    # F(4x4, 3x3) in float32 measured 3e-6 to 1.2e-5 of the output's range; a wrong transform is O(1)
    assert _rel_err(got, ref) < 3e-5
    # the channels-last weight (as the prepared blocks hold it) gives the same bits
    assert torch.equal(winograd.conv3x3(x, wt.contiguous(memory_format=torch.channels_last), b), got)


def test_same_bits_whatever_the_thread_count():
    x, wt, b = _nhwc(1, 64, 40, 40), torch.randn(64, 64, 3, 3), torch.randn(64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = winograd.conv3x3(x, wt, b)
        torch.set_num_threads(max(2, threads))
        many = winograd.conv3x3(x, wt, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many) and torch.equal(many, winograd.conv3x3(x, wt, b))


def test_a_weight_changed_in_place_is_transformed_again():
    x, wt = _nhwc(1, 32, 16, 16), torch.randn(32, 32, 3, 3)
    first = winograd.conv3x3(x, wt)
    wt.mul_(2)
    torch.testing.assert_close(winograd.conv3x3(x, wt), 2 * first, rtol=1e-5, atol=1e-5)


def test_where_it_runs():
    x, wt = _nhwc(1, 64, 32, 32), torch.randn(64, 64, 3, 3)
    ok = dict(bias=None, stride=1, padding=[1, 1], groups=1, transpose=False)
    assert winograd.usable(x, wt, **ok)
    assert not winograd.usable(x.contiguous(), wt, **ok)                            # NCHW
    assert not winograd.usable(x.double(), wt.double(), **ok)
    assert not winograd.usable(x, wt, **{**ok, "stride": 2})
    assert not winograd.usable(x, wt, **{**ok, "padding": [0, 0]})
    assert not winograd.usable(x, wt, **{**ok, "transpose": True})
    assert not winograd.usable(_nhwc(1, 64, 8, 8), wt, **ok)                        # too small to gain
    assert not winograd.usable(_nhwc(1, 512, 16, 16), torch.randn(512, 512, 3, 3), **ok)
    assert winograd.usable(_nhwc(1, 512, 32, 32), torch.randn(512, 512, 3, 3), **ok)
    assert not winograd.usable(x, wt.requires_grad_(True), **ok)                    # training
    with torch.no_grad():
        assert winograd.usable(x, wt, **ok)
    winograd.set_enabled(False)
    assert not winograd.usable(x, wt.detach(), **ok)


def test_the_convolution_op_routes_inference_to_it():
    x, wt, b = _nhwc(1, 32, 32, 32), torch.randn(48, 32, 3, 3) / 17, torch.randn(48)
    with torch.no_grad():
        routed = conv2d_resample(x, wt, padding=1, bias=b)
        winograd.set_enabled(False)
        direct = conv2d_resample(x, wt, padding=1, bias=b)
    assert torch.equal(routed, winograd.conv3x3(x, wt, b))
    assert not torch.equal(routed, direct)
    torch.testing.assert_close(routed, direct, rtol=1e-4, atol=1e-4)


def test_the_kernels_switch_turns_it_off(monkeypatch):
    winograd.set_enabled(None)
    try:
        cuda_ops.set_kernels("off")
        assert not winograd.enabled()
        cuda_ops.set_kernels(None)
        assert winograd.enabled()
        monkeypatch.setenv(winograd.ENV_KERNELS, "off")
        assert not winograd.enabled()
        monkeypatch.setenv(winograd.ENV, "1")
        assert winograd.enabled()
    finally:
        cuda_ops.set_kernels(None)


def test_a_whole_frame_within_the_same_pixels_rule(tiny_generator):
    """Tri-planes and a tiny frame (render + super-resolution) with Winograd convolutions against the
    direct ones: the project's same-pixels rule (1e-4); measured 2e-6 to 3e-6 on the default model."""
    G = copy.deepcopy(tiny_generator)
    G.set_channels_last(True)
    torch.manual_seed(0)
    z, zm = torch.randn(1, G.z_dim), torch.randn(1, G.motion_dim)
    c = torch.from_numpy(cameras.OrbitCamera(yaw=0.3).c()).float()[None]
    out = {}
    with torch.no_grad():
        ws = G.mapping(z, c)
        for flag in (False, True):
            winograd.set_enabled(flag)
            winograd.stats(reset=True)
            planes = G.planes(ws, zm, torch.tensor([0.5]), noise_mode="const")
            out[flag] = (planes, G.render_planes(planes, ws, c, 64))
            assert (winograd.stats()["convs"] > 0) == flag
    assert (out[True][0] - out[False][0]).abs().max() / out[False][0].abs().max() < 1e-4
    for k in ("image", "image_raw", "image_depth"):
        assert (out[True][1][k] - out[False][1][k]).abs().max() < 1e-4, k


def test_a_build_in_another_thread_does_not_hold_up_a_render(monkeypatch):
    """While a warm-up thread compiles (here: holds the build lock), a render runs the direct convolution
    at once, and the next call after the build uses Winograd (nothing is remembered from the wait)."""
    winograd.library()
    built = winograd._lib
    monkeypatch.setattr(winograd, "_lib", None)
    x, wt = _nhwc(1, 32, 16, 16), torch.randn(32, 32, 3, 3)
    ok = dict(bias=None, stride=1, padding=1, groups=1, transpose=False)
    with winograd._lock:
        assert not winograd.usable(x, wt, **ok)
    assert winograd._lib is None
    winograd._lib = built
    assert winograd.usable(x, wt, **ok)


@pytest.mark.parametrize("flip_weight", [False, True])
def test_upsampling_layers_as_four_phases(flip_weight):
    """conv2d_resample(up=2) (transposed convolution + FIR) as one Winograd convolution of its four output
    phases, written interleaved: against the float64 operation itself."""
    from pv3d_core.nn.ops import setup_filter
    f = setup_filter([1, 3, 3, 1])
    x = _nhwc(2, 64, 17, 20)
    g = torch.Generator().manual_seed(3)
    wt, b = torch.randn(32, 64, 3, 3, generator=g) / 24, torch.randn(32, generator=g)
    ref = conv2d_resample(x.double(), wt.double(), f=f.double(), up=2, padding=1, flip_weight=flip_weight,
                          bias=b.double())
    winograd.stats(reset=True)
    with torch.no_grad():
        got = conv2d_resample(x, wt, f=f, up=2, padding=1, flip_weight=flip_weight, bias=b)
    assert winograd.stats()["convs"] == 1
    assert got.shape == ref.shape == (2, 32, 34, 40) and got.is_contiguous(memory_format=torch.channels_last)
    assert _rel_err(got, ref) < 3e-5
    # another filter whose phases are wider than 3x3 keeps the transposed convolution
    f6 = setup_filter([1, 5, 10, 10, 5, 1])
    with torch.no_grad():
        conv2d_resample(x, wt, f=f6, up=2, padding=1, flip_weight=flip_weight, bias=b)
    assert winograd.stats()["convs"] == 1


def test_transient_weights_do_not_pile_up():
    """Weights made new every frame (a new appearance each frame): a transform goes when its weight goes
    (and its memory serves the next one), and the kernel's transform equals the PyTorch one."""
    x = _nhwc(1, 32, 16, 16)
    before = len(winograd._weights)           # what other tests' live models hold
    for _ in range(50):
        winograd.conv3x3(x, torch.randn(48, 32, 3, 3))
    assert len(winograd._weights) <= before + 1
    w = torch.randn(48, 32, 3, 3)
    odd = torch.randn(3, 48, 32, 3).permute(1, 2, 0, 3)           # strides the kernel does not take
    assert odd.stride(2) != 3 * odd.stride(3)
    odd.copy_(w)
    torch.testing.assert_close(winograd.transform_weight(odd), winograd.transform_weight(w), rtol=0, atol=1e-6)


def test_a_build_that_fails_its_self_check_is_not_used(monkeypatch):
    """The library checks itself against PyTorch's convolution once per process; one that disagrees is
    refused with the figure (here: a tolerance nothing meets), the direct convolutions run, and the
    doctor's line says why."""
    monkeypatch.setattr(winograd, "_lib", None)
    monkeypatch.setattr(winograd, "SELF_CHECK_TOLERANCE", 0.0)
    x, wt = _nhwc(1, 32, 16, 16), torch.randn(32, 32, 3, 3)
    assert not winograd.usable(x, wt, None, 1, 1, 1, False)
    assert "failed their self-check (error " in winograd.describe()
    with torch.no_grad():
        assert torch.equal(conv2d_resample(x, wt, padding=1), F.conv2d(x, wt.contiguous(memory_format=torch.channels_last), padding=1))

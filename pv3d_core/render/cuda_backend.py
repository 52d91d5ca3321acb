"""The fused ops on a compiled CUDA module (:class:`~.cuda_launch.Launcher`), with no selection.

Three kernels (a: decode points, b: composite, c: importance depths) make the four ops
:func:`render_rays_kernels`, :func:`query_kernels`, :func:`march_kernels` and
:func:`importance_depths_kernels`, each with the signature and outputs of its PyTorch reference in
:mod:`volume` plus the launcher. :func:`pack_decoder` and :func:`prepare_planes` put a model's decoder
and tri-planes in the layout the kernels read (the CPU kernels read the same). :mod:`cuda_ops` decides
when these run; the tests run them on an emulated launcher.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from . import volume
from .cuda_launch import Dims

__all__ = ["MAX_SAMPLES", "pack_decoder", "prepare_planes", "render_rays_kernels", "query_kernels", "march_kernels",
           "importance_depths_kernels"]

MAX_SAMPLES = 256          # PV3D_MAX_SAMPLES in the kernel source


def pack_decoder(decoder, dims: Dims, device: torch.device) -> torch.Tensor:
    """The decoder's gain-applied weights in the kernel's layout (:meth:`OSGDecoder.packed_parameters`)."""
    packed = decoder.packed_parameters(dims.out_pad, device)
    assert packed.numel() == dims.n_params
    return packed


_planes_cache: dict = {}


def prepare_planes(planes: torch.Tensor, half: bool) -> torch.Tensor:
    """Tri-planes (N, 3, C, H, W) -> channels-last (N, 3, H, W, C), float32 or float16, contiguous.
    The copy of the most recent tri-planes is kept while they are unchanged (cached planes re-rendered
    from new cameras convert once)."""
    key = (planes._version, planes.data_ptr(), tuple(planes.shape), planes.dtype, half)
    hit = _planes_cache.get("last")
    if hit is not None and hit[0]() is planes and hit[1] == key:
        return hit[2]
    with torch.no_grad():
        out = planes.detach().permute(0, 1, 3, 4, 2).to(torch.float16 if half else torch.float32).contiguous()
        if out.data_ptr() % 16:   # a view at an odd offset: the kernels read 16-byte vectors
            out = out.clone()
    try:
        _planes_cache["last"] = (weakref.ref(planes), key, out)
    except TypeError:  # pragma: no cover - tensors support weak references
        pass
    return out


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------- stages
_BLOCK = 128


def _grid(n: int, per_block: int, cap: int) -> int:
    return max(1, min((n + per_block - 1) // per_block, cap))


def _decode(launcher, planes_cl, dims: Dims, params, origins, dirs, depths, depth_ray_stride: int,
            samples: int, rays_per_batch: int, n_rays: int, use_rays: bool, coord_scale: float):
    """Kernel (a). Returns sigma (n_rays * samples,), features (n_rays * samples, cout)."""
    dev = origins.device
    n_pts = n_rays * samples
    sigma = torch.empty(n_pts, dtype=torch.float32, device=dev)
    feat = torch.empty(n_pts, dims.cout, dtype=torch.float32, device=dev)
    if n_pts == 0:
        return sigma, feat
    kernel = "pv3d_decode_f16" if planes_cl.dtype == torch.float16 else "pv3d_decode_f32"
    h, w = planes_cl.shape[2], planes_cl.shape[3]
    launcher.launch(kernel, _grid(n_pts, _BLOCK, launcher.num_sms * 8), _BLOCK,
                    [planes_cl, h, w, params, origins, dirs, depths, depth_ray_stride, samples, rays_per_batch,
                     n_rays, int(use_rays), float(coord_scale), sigma, feat])
    return sigma, feat


def _importance(launcher, depths_c, c_ray_stride: int, values, values_are_weights: bool, u, u_ray_stride: int,
                n_rays: int, n_c: int, n_f: int, sort_output: bool):
    """Kernel (c). Returns fine depths (n_rays, n_f)."""
    out = torch.empty(n_rays, n_f, dtype=torch.float32, device=values.device)
    if n_rays and n_f:
        launcher.launch("pv3d_importance", _grid(n_rays, _BLOCK, 1 << 30), _BLOCK,
                        [depths_c, c_ray_stride, values, int(values_are_weights), u, u_ray_stride, n_rays, n_c, n_f,
                         int(sort_output), out])
    return out


def _composite(launcher, list_a, list_b, bounds, n_rays: int, n_channels: int, want_weights: bool):
    """Kernel (b). list_a = (depths, ray_stride, sigma, feat, n); list_b = (depths, sigma, feat, n) or None.
    Returns rgb (n_rays, C) in [-1, 1], depth (n_rays,), weight sum (n_rays,), weights or None."""
    dev = bounds.device
    da, a_stride, sa, fa, n_a = list_a
    if list_b is None:
        db, sb, fb, n_b = da, sa, fa, 0
    else:
        db, sb, fb, n_b = list_b
    rgb = torch.empty(n_rays, n_channels, dtype=torch.float32, device=dev)
    depth = torch.empty(n_rays, dtype=torch.float32, device=dev)
    wsum = torch.empty(n_rays, dtype=torch.float32, device=dev)
    weights = torch.empty(n_rays, max(n_a + n_b - 1, 0) if want_weights else 1, dtype=torch.float32, device=dev)
    if n_rays:
        launcher.launch("pv3d_composite", _grid(n_rays, _BLOCK // 32, launcher.num_sms * 64), _BLOCK,
                        [da, a_stride, sa, fa, n_a, db, sb, fb, n_b, bounds, n_rays, n_channels, rgb, depth, wsum,
                         weights, int(want_weights)])
    return rgb, depth, wsum, (weights if want_weights else None)


def _bounds(depths: torch.Tensor) -> torch.Tensor:
    """[min, max] of all depths, as the reference's clamp uses."""
    return torch.stack(torch.aminmax(depths)).contiguous()


# ---------------------------------------------------------------------------------------------- render
def render_rays_kernels(launcher, planes, decoder, origins, dirs, options: dict, deterministic: bool,
                        half_planes: bool = False, mark: Callable[[str], None] | None = None):
    """The kernel pipeline of :func:`cuda_ops.render_rays_fast`, on a given launcher (no selection).

    ``mark(stage)`` is called after each stage ("prepare", "coarse", "importance", "fine", "composite")
    for the benchmarks' timers.
    """
    mark = mark or (lambda _s: None)
    b, r, _ = origins.shape
    dev = origins.device
    n_rays = b * r
    dims = Dims(*decoder.kernel_layout())
    params = pack_decoder(decoder, dims, dev)
    planes_cl = prepare_planes(planes, half_planes)
    o = _f32(origins).reshape(n_rays, 3)
    d = _f32(dirs).reshape(n_rays, 3)
    scale = 2.0 / options["box_warp"]
    n_c = int(options["depth_resolution"])
    n_f = int(options.get("depth_resolution_importance", 0) or 0)
    if deterministic:   # the reference's values exactly (same linspace), shared by all rays
        depths_c = torch.linspace(options["ray_start"], options["ray_end"], n_c, device=dev)
        c_stride = 0
    else:               # the reference's call, so that the same random numbers come out
        depths_c = volume.coarse_depths(b, r, options["ray_start"], options["ray_end"], n_c, False, dev)
        depths_c = depths_c.reshape(n_rays, n_c).contiguous()
        c_stride = n_c
    mark("prepare")
    sigma_c, feat_c = _decode(launcher, planes_cl, dims, params, o, d, depths_c, c_stride, n_c, r, n_rays, True, scale)
    mark("coarse")
    bounds = _bounds(depths_c)
    if n_f > 0:
        if deterministic:
            u, u_stride = torch.linspace(0, 1, n_f, device=dev), 0
        else:
            u, u_stride = torch.rand(n_rays, n_f, device=dev), n_f
        depths_f = _importance(launcher, depths_c, c_stride, sigma_c, False, u, u_stride, n_rays, n_c, n_f, True)
        mark("importance")
        sigma_f, feat_f = _decode(launcher, planes_cl, dims, params, o, d, depths_f, n_f, n_f, r, n_rays, True, scale)
        mark("fine")
        list_b = (depths_f, sigma_f, feat_f, n_f)
    else:
        list_b = None
    rgb, depth, wsum, _ = _composite(launcher, (depths_c, c_stride, sigma_c, feat_c, n_c), list_b, bounds, n_rays,
                                     dims.cout, False)
    mark("composite")
    return rgb.reshape(b, r, dims.cout), depth.reshape(b, r, 1), wsum.reshape(b, r, 1)


# ---------------------------------------------------------------------------------------------- single ops
def query_kernels(launcher, planes, decoder, coords, box_warp: float, half_planes: bool = False) -> dict:
    n, m, _ = coords.shape
    dims = Dims(*decoder.kernel_layout())
    params = pack_decoder(decoder, dims, coords.device)
    pts = _f32(coords).reshape(n * m, 3)
    sigma, feat = _decode(launcher, prepare_planes(planes, half_planes), dims, params, pts, pts, pts, 0, 1, m,
                          n * m, False, 2.0 / box_warp)
    return {"rgb": feat.reshape(n, m, dims.cout), "sigma": sigma.reshape(n, m, 1)}


def march_kernels(launcher, colors, densities, depths):
    b, r, s, c = colors.shape
    n_rays = b * r
    dz = _f32(depths).reshape(n_rays, s)
    rgb, depth, _, weights = _composite(launcher, (dz, s, _f32(densities).reshape(n_rays, s),
                                                   _f32(colors).reshape(n_rays, s, c), s),
                                        None, _bounds(dz), n_rays, c, True)
    return rgb.reshape(b, r, c), depth.reshape(b, r, 1), weights.reshape(b, r, s - 1, 1)


def importance_depths_kernels(launcher, depths_coarse, weights, n: int, deterministic: bool):
    b, r, s, _ = depths_coarse.shape
    n_rays = b * r
    if deterministic:
        u, u_stride = torch.linspace(0, 1, n, device=depths_coarse.device), 0
    else:
        u, u_stride = torch.rand(n_rays, n, device=depths_coarse.device), n
    out = _importance(launcher, _f32(depths_coarse).reshape(n_rays, s), s, _f32(weights).reshape(n_rays, s - 1), True,
                      u, u_stride, n_rays, s, n, False)
    return out.reshape(b, r, n, 1)

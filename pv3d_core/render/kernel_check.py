"""The fused kernels prove themselves on the user's machine: a self-check against the PyTorch reference.

The kernels (CUDA, and the CPU build of :mod:`cpu_kernels`) are compiled at run time, on GPUs, drivers,
compilers and CPUs that the tests never saw. Before :mod:`cuda_ops` lets a compiled module render, it
runs it once on a small problem of the model's sizes and compares every output with the PyTorch
reference (:mod:`volume`), computed on the CPU in float32:

- the decoder's sizes (tri-plane channels, hidden width, features: what the module is compiled for),
  random weights and 64² random smooth tri-planes, 2 batches of 8 x 8 rays at 48 + 48 samples (the
  released configuration's counts) with deterministic sampling: the whole render (coarse decode,
  importance sampling, fine decode, compositing);
- the decoder at points inside and outside the box (the query kernel);
- compositing with its weights, and importance sampling, on their own (the ops ``march`` and
  ``importance_depths``), an empty ray included.

Every output must satisfy ``max |kernel - reference| <= TOLERANCE * max(1, max |reference|)`` with
``TOLERANCE`` = 1e-5, the bound of the kernel tests (tests/test_cuda_kernels.py, test_cpu_kernels.py).

A module that disagrees, or that fails while being checked, is not used: the wrapper runs the PyTorch
reference instead, one warning is logged, and ``cuda_ops.describe`` (the viewer's status bar, ``pv3d
doctor``) gives the reason.

Verdicts are kept per key -- the backend's identity (GPU model and UUID + driver for CUDA; the CPU,
compiler and flags for the CPU build), the model size, the kernel source, the torch version and the
version of this check -- in memory and on disk, in ``$PV3D_KERNEL_VERDICTS`` (default:
``selfcheck.json`` in the kernel cache folder, ``~/.cache/pv3d-studio/kernels``), so a machine checks
once. A check that failed with an exception (out of memory, a launch error) is remembered for the
process only: it may be a passing condition. ``PV3D_KERNEL_CHECK`` = ``auto`` (default: check once,
remember) | ``fresh`` (check again in each process; the file is updated, not read) | ``off`` (trust the
kernels: no check).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from . import volume
from .cameras import OrbitCamera
from .decoder import OSGDecoder
from .rays import pixel_rays, split_camera

__all__ = ["TOLERANCE", "CHECK_VERSION", "ENV_CHECK", "ENV_VERDICTS", "Verdict", "Backend", "check_mode",
           "verdicts_path", "make_problem", "run_check", "verdict", "forget", "generation"]

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5
CHECK_VERSION = 1                   # bump when the problem or the comparison changes: old verdicts are void
ENV_CHECK = "PV3D_KERNEL_CHECK"
ENV_VERDICTS = "PV3D_KERNEL_VERDICTS"
CHECK_MODES = ("auto", "fresh", "off")
SAMPLES = (48, 48)                  # coarse + fine samples per ray in the check's render
PLANE_RES = 64
RAYS = 8                            # 8 x 8 rays per batch, 2 batches


@dataclass
class Verdict:
    """The outcome of a self-check. ``max_error`` is the worst error over all outputs compared, relative to
    max(1, max |reference|) as the tolerance is; ``worst`` names that output."""

    ok: bool
    reason: str = ""                # why the kernels are not used ("" when ok)
    max_error: float = 0.0
    worst: str = ""
    seconds: float = 0.0
    where: str = ""                 # the backend's identity, for messages
    origin: str = "checked"         # "checked" (now), "file" (read from the verdict file)
    persistent: bool = True         # False for exceptions: remembered for this process only

    def summary(self) -> str:
        if self.ok:
            return f"matches PyTorch (max error {self.max_error:.1e} <= {TOLERANCE:.0e})"
        return self.reason


class Backend(Protocol):
    """What the check runs: the kernels' versions of the ops, on tensors of ``device``."""

    device: torch.device

    def render(self, planes, decoder, origins, dirs, options: dict, half: bool) -> dict:
        """{variant name: (rgb, depth, weight)} of a deterministic render, one entry per code path the
        backend may take for it ("" for a single one)."""

    def query(self, planes, decoder, points, box_warp: float, half: bool) -> dict: ...

    def march(self, colors, densities, depths): ...

    def importance(self, depths, weights, n: int): ...


def check_mode() -> str:
    mode = os.environ.get(ENV_CHECK, "auto").strip().lower() or "auto"
    return mode if mode in CHECK_MODES else "auto"


def verdicts_path() -> Path:
    env = os.environ.get(ENV_VERDICTS)
    if env:
        return Path(env)
    from ..native import cache_dir

    return cache_dir() / "selfcheck.json"


# ---------------------------------------------------------------------------------------------- the problem
def make_problem(dims, seed: int = 0) -> dict:
    """The check's inputs for decoder sizes ``dims`` = (channels, hidden, features) (a tuple or
    ``cuda_launch.Dims``), on the CPU, the same
    on every machine; the global random state is left as it was."""
    if hasattr(dims, "cin"):
        dims = (dims.cin, dims.hidden, dims.cout)
    cin, hidden, cout = (int(x) for x in dims)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = OSGDecoder(cin, hidden_dim=hidden, output_dim=cout).eval().requires_grad_(False)
    with torch.no_grad():
        for fc in (decoder.net[0], decoder.net[2]):
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=g))
            fc.bias.copy_(torch.randn(fc.bias.shape, generator=g) * 0.5)
        decoder.net[2].bias[0] += 2.0        # dense enough that most rays hit something
        low = torch.randn(2 * 3, cin, 8, 8, generator=g) * 4
        planes = F.interpolate(low, size=(PLANE_RES, PLANE_RES), mode="bilinear", align_corners=False)
        planes = planes.reshape(2, 3, cin, PLANE_RES, PLANE_RES).contiguous()
        cams = torch.stack([torch.from_numpy(OrbitCamera(yaw=y, pitch=p).c()) for y, p in ((0.0, 0.0), (0.45, 0.1))])
        origins, dirs = pixel_rays(*split_camera(cams.float()), RAYS)
        points = torch.rand(2, 256, 3, generator=g) * 1.4 - 0.7          # some outside the box
        points[0, :3] = torch.tensor([[0.5, 0.5, 0.5], [1e6, 0.0, 0.0], [0.0, 0.0, 0.0]])
        depths = torch.sort(torch.rand(2, 40, 17, 1, generator=g) * 1.05 + 2.25, dim=2).values
        densities = torch.randn(2, 40, 17, 1, generator=g) * 3
        densities[1, 3] = -100.0             # an empty ray: depth NaN -> +inf -> clamped to the maximum
        colors = torch.rand(2, 40, 17, cout, generator=g)
        weights = torch.rand(2, 40, 16, 1, generator=g) ** 4
    options = {"ray_start": 2.25, "ray_end": 3.3, "box_warp": 1.0, "depth_resolution": SAMPLES[0],
               "depth_resolution_importance": SAMPLES[1], "clamp_mode": "softplus",
               "disparity_space_sampling": False}
    return {"decoder": decoder, "planes": planes, "origins": origins.contiguous(), "dirs": dirs.contiguous(),
            "options": options, "points": points, "depths": depths, "densities": densities, "colors": colors,
            "weights": weights}


def _error(got, ref) -> float:
    """max |got - ref| / max(1, max |ref|); inf for a shape mismatch or a NaN the reference does not have."""
    got = got.detach().to("cpu", torch.float32)
    ref = ref.detach().to(torch.float32)
    if got.shape != ref.shape:
        return math.inf
    both_nan = torch.isnan(got) & torch.isnan(ref)
    diff = torch.where(both_nan, torch.zeros_like(got), (got - ref).abs())
    err = diff.max().item() if diff.numel() else 0.0
    if math.isnan(err):
        return math.inf
    scale = max(1.0, ref.abs().nan_to_num(0.0, 0.0, 0.0).max().item() if ref.numel() else 1.0)
    return err / scale


def run_check(backend: Backend, dims, half: bool = False) -> Verdict:
    """Run the check now (no caching): every output of ``backend`` against the reference."""
    t0 = time.perf_counter()
    p = make_problem(dims)
    dev = backend.device
    dec = p["decoder"]
    dec_dev = copy.deepcopy(dec).to(dev) if dev.type != "cpu" else dec
    planes_ref = p["planes"].half().float() if half else p["planes"]
    errors: dict[str, float] = {}
    with torch.no_grad():
        to = (lambda t: t.to(dev)) if dev.type != "cpu" else (lambda t: t)
        planes, origins, dirs = to(p["planes"]), to(p["origins"]), to(p["dirs"])
        opts = p["options"]
        ref = volume.render_rays(planes_ref, dec, p["origins"], p["dirs"], opts, True)
        for variant, got in backend.render(planes, dec_dev, origins, dirs, opts, half).items():
            for name, g, r in zip(("render rgb", "render depth", "render weight"), got, ref):
                errors[f"{name} {variant}".strip()] = _error(g, r)
        pts = p["points"]
        ref_q = volume.query(planes_ref, dec, pts, pts, opts["box_warp"])
        got_q = backend.query(planes, dec_dev, to(pts), opts["box_warp"], half)
        errors["query sigma"] = _error(got_q["sigma"], ref_q["sigma"])
        errors["query rgb"] = _error(got_q["rgb"], ref_q["rgb"])
        ref_m = volume.march(p["colors"], p["densities"], p["depths"])
        got_m = backend.march(to(p["colors"]), to(p["densities"]), to(p["depths"]))
        for name, g, r in zip(("march rgb", "march depth", "march weights"), got_m, ref_m):
            errors[name] = _error(g, r)
        ref_i = volume.importance_depths(p["depths"], p["weights"], 20, True)
        errors["importance depths"] = _error(backend.importance(to(p["depths"]), to(p["weights"]), 20), ref_i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    worst = max(errors, key=lambda k: errors[k])
    err = errors[worst]
    seconds = time.perf_counter() - t0
    if err <= TOLERANCE:
        return Verdict(True, max_error=err, worst=worst, seconds=seconds)
    what = "not finite or of the wrong shape" if math.isinf(err) else f"off by {err:.1e} (> {TOLERANCE:.0e})"
    return Verdict(False, reason=f"{worst} {what} against the PyTorch reference", max_error=err, worst=worst,
                   seconds=seconds)


# ---------------------------------------------------------------------------------------------- verdicts
_memory: dict[str, Verdict] = {}
_warned: set[str] = set()
_lock = threading.RLock()
_generation = [0]                   # bumped by forget(): callers' own copies of verdicts are stale then


def generation() -> int:
    return _generation[0]


def _read_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_file(path: Path, key: str, v: Verdict) -> None:
    """Add one verdict to the file (read, update, atomic rename); a failure to write only costs a re-check."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_file(path)
        entry = {k: val for k, val in asdict(v).items() if k not in ("origin", "persistent")}
        entry["max_error"] = v.max_error if math.isfinite(v.max_error) else None
        entry["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        data[key] = entry
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        logger.info("could not record the kernel self-check in %s: %s", path, e)


def _from_file(entry) -> Verdict | None:
    try:
        err = entry.get("max_error")
        return Verdict(bool(entry["ok"]), reason=str(entry.get("reason", "")),
                       max_error=math.inf if err is None else float(err), worst=str(entry.get("worst", "")),
                       seconds=float(entry.get("seconds", 0.0)), where=str(entry.get("where", "")), origin="file")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def verdict(key: str, backend: Backend, dims, half: bool = False, where: str = "", fresh: bool = False) -> Verdict:
    """The verdict for ``key``: from memory, else from the verdict file (mode ``auto``), else checked now
    and recorded. ``fresh`` checks again whatever is remembered (``pv3d doctor``). A rejection is logged
    once per process and key."""
    mode = check_mode()
    if mode == "off" and not fresh:
        return Verdict(True, reason="", where=where, origin="off")
    with _lock:
        v = None if fresh else _memory.get(key)
        if v is None and mode == "auto" and not fresh:
            v = _from_file(_read_file(verdicts_path()).get(key))
        if v is None:
            try:
                v = run_check(backend, dims, half)
            except Exception as e:  # noqa: BLE001 - a module that cannot even be checked is not used
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                v = Verdict(False, reason=f"the self-check failed: {type(e).__name__}: {msg}", max_error=math.inf,
                            persistent=False)
            v.where = where
            if v.persistent:
                _write_file(verdicts_path(), key, v)
        _memory[key] = v
        if not v.ok and key not in _warned:
            _warned.add(key)
            logger.warning("The %s kernels failed their self-check (%s); rendering with PyTorch instead. "
                           "Verdict kept in %s; set %s=fresh to check again.", where or "fused", v.reason,
                           verdicts_path(), ENV_CHECK)
        return v


def forget(key: str | None = None) -> None:
    """Drop remembered verdicts (all, or one key) from memory, and their warnings; the file is kept."""
    with _lock:
        _generation[0] += 1
        if key is None:
            _memory.clear()
            _warned.clear()
        else:
            _memory.pop(key, None)
            _warned.discard(key)

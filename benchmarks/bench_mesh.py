"""Time of one mesh export (density grid -> marching cubes -> largest component -> vertex colours).

    python benchmarks/bench_mesh.py [--res 256] [--runs 3] [--ckpt FILE] [--threads N] [--device cpu]

Model: ``--ckpt`` (or the embedded default model when it exists) at seed 0, motion seed 0, t 0.5;
otherwise the known-shape model of the tests (tests/mesh_shapes.py: the tiny architecture with a
hand-set density, an ellipsoid about the size of a head) with its tri-planes resampled to the
released 256² plane size. The decoder (32 -> 64 -> 33) is the same in every config, so the grid stage
costs the same per point as with the released model; the marching-cubes, component and colour stages
depend on the surface's size (reported as vertex/face counts).

Reports the median of --runs timed runs (after one warm-up at a small grid) of the whole
``extract_mesh`` (default narrow-band grid) and of the exhaustive density grid alone (what
``--full-grid`` evaluates), and whether both grids give the same surface (face counts).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pv3d_core import mesh  # noqa: E402


def load(args, dev):
    from pv3d_core.paths import default_checkpoint

    path = Path(args.ckpt) if args.ckpt else default_checkpoint()
    if path.is_file():
        from pv3d_core.io import load_generator
        from pv3d_core.pipeline import FrameRenderer

        G = load_generator(path, device=dev)
        r = FrameRenderer(G, dev)
        ws, zm = r.ws_for(0, 0.7), r.motion_for(0)
        with torch.no_grad():
            planes = G.planes(ws, zm, torch.tensor([0.5], device=dev), noise_mode="const")
        return G, planes, ws, f"checkpoint {path} (seed 0, motion 0, t 0.5)"
    from mesh_shapes import shape_model

    from pv3d_core.config import preset
    from pv3d_core.io import build_generator

    torch.manual_seed(0)
    G, planes, ws = shape_model(build_generator(preset("tiny")).eval().requires_grad_(False))
    planes = torch.nn.functional.interpolate(planes[0], size=(256, 256), mode="bilinear", align_corners=False)[None]
    return G.to(dev), planes.to(dev), ws.to(dev), "known-shape test model (tiny architecture, 256² planes)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ckpt")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    G, planes, ws, what = load(args, dev)
    mesh.extract_mesh(G, ws, None, 0.5, resolution=32, planes=planes, level=10.0)   # warm-up
    totals, grids, m = [], [], None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        full, _ = mesh.density_grid(G, planes, args.res)
        grids.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = mesh.extract_mesh(G, ws, None, 0.5, resolution=args.res, planes=planes)
        totals.append(time.perf_counter() - t0)
    from skimage.measure import marching_cubes

    seen = []
    band, _ = mesh.density_grid(G, planes, args.res, level=10.0, progress=lambda i, n: seen.append(n))
    same_sign = bool(((full > 10.0) == (band > 10.0)).all())
    full_faces, band_faces = len(marching_cubes(full, 10.0)[1]), len(marching_cubes(band, 10.0)[1])
    out = {"model": what, "device": str(dev), "threads": torch.get_num_threads(), "resolution": args.res,
           "runs": args.runs, "extract_mesh_s": [round(x, 2) for x in totals],
           "extract_mesh_median_s": round(statistics.median(totals), 2),
           "density_grid_median_s": round(statistics.median(grids), 2),
           "vertices": len(m.vertices), "faces": len(m.faces),
           "marching_cubes_faces_full_grid": full_faces, "marching_cubes_faces_band_grid": band_faces,
           "band_grid_same_side_everywhere": same_sign,
           "band_points_evaluated_fraction": round(seen[-1] / args.res ** 3, 3)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

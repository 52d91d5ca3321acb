"""`pv3d mesh`: the 3D surface of a moment as a coloured mesh (PLY, OBJ or GLB), or a sequence over the
timeline (a folder with one file per frame and an index.json)."""
from __future__ import annotations

import json
from pathlib import Path

from ..device import pick_device
from ..rules import SEED, Float, Int
from .common import FPS, PSI, TIME, add_device, resolve_checkpoint


def add_parser(sub) -> None:
    p = sub.add_parser("mesh", help="export the 3D surface of a moment as a coloured mesh (PLY, OBJ, GLB)",
                       description="Marching cubes of the tri-plane density of one identity at time t. "
                                   "The mesh is in world units, +Y up, the face towards +Z.")
    p.add_argument("--ckpt", help="checkpoint (default: the embedded model)")
    p.add_argument("--portrait", help="a saved portrait (pv3d animate / invert output) instead of a seed")
    p.add_argument("--seed", type=SEED.flag, default=0, help="appearance seed")
    p.add_argument("--motion-seed", type=SEED.flag, default=0)
    p.add_argument("--t", type=TIME.flag, default=0.0, help="timestamp in [0, 1]")
    p.add_argument("--frames", type=Int(1, 10_000).flag, default=1,
                   help="export a sequence: this many frames from --t to --t1, one file each in the folder -o "
                        "(with index.json)")
    p.add_argument("--t1", type=TIME.flag, default=1.0)
    p.add_argument("--psi", type=PSI.flag, default=0.7)
    p.add_argument("--res", type=Int(16, 512).flag, default=256, help="grid resolution, 16-512 (default 256)")
    p.add_argument("--level", type=Float(-1e6, 1e6).flag, default=10.0, help="density iso-level (raw sigma, default 10)")
    p.add_argument("--all-components", action="store_true", help="keep floaters (default: the largest part)")
    p.add_argument("--full-grid", action="store_true",
                   help="evaluate every grid point (default: a coarse pass, then exact values near the surface)")
    add_device(p)
    p.add_argument("--format", choices=["ply", "obj", "glb"],
                   help="file format (default: the suffix of -o; for a sequence folder without one, ply)")
    p.add_argument("--fps", type=FPS.flag, default=25.0, help="a sequence's frame rate, for the index's times")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.ply, .obj, .glb), or with --frames > 1 the sequence's folder "
                        "(a name with a suffix, e.g. head.glb, gives the folder head/ of .glb files)")
    p.set_defaults(func=run_mesh)


def run_mesh(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..export import check_output
    from ..io import load_generator
    from ..mesh import extract_mesh, mesh_format, write_mesh, write_mesh_sequence
    from ..pipeline import FrameRenderer

    out = Path(args.output)
    if args.frames > 1:
        fmt = mesh_format(out, args.format or (out.suffix.lstrip(".") or "ply"))
        if out.suffix:
            out = out.with_suffix("")
    else:
        fmt = mesh_format(out, args.format)
        check_output(out)                              # before loading the model and extracting
    dev = pick_device(args.device)
    if args.portrait:
        from ..fit_files import load_portrait

        G, ws, _ = load_portrait(args.portrait, device=dev)
    else:
        G = load_generator(resolve_checkpoint(args.ckpt), device=dev)
        ws = None
    r = FrameRenderer(G)
    if ws is None:
        ws = r.ws_for(args.seed, args.psi)
    zm = r.motion_for(args.motion_seed)
    ts = np.linspace(args.t, args.t1, args.frames) if args.frames > 1 else [args.t]

    def meshes():
        for t in ts:
            bar = tqdm(total=1000, desc=f"mesh t={t:.3f}", unit="‰")

            def prog(i, n):
                bar.n = i
                bar.refresh()

            try:
                m = extract_mesh(G, ws, zm, float(t), resolution=args.res, level=args.level,
                                 largest_component=not args.all_components, progress=prog,
                                 narrow_band=not args.full_grid)
            finally:
                bar.close()
            if len(ts) > 1:
                print(json.dumps({"vertices": len(m.vertices), "faces": len(m.faces), "t": float(t)}))
            yield float(t), m

    if args.frames == 1:
        (t, m), = meshes()
        print(json.dumps({"mesh": str(write_mesh(out, m, fmt)), "format": fmt, "vertices": len(m.vertices),
                          "faces": len(m.faces), "t": t}))
    else:
        folder = write_mesh_sequence(out, meshes(), fmt, fps=args.fps)
        print(json.dumps({"sequence": str(folder), "format": fmt, "frames": len(ts)}))
    return 0

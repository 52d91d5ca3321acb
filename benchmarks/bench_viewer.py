"""Viewer performance: UI frame time while rendering, and render fps of the viewer's paths.

    python benchmarks/bench_viewer.py [--ckpt PATH] [--seconds 6] [--frames 12] [--no-ui] [--device cpu]

* UI: the real app (under its own Xvfb when $DISPLAY is unset) renders continuously (the camera
  orbits through the control socket, so every UI frame asks for a new render); reports the median
  and 95th percentile of the UI frame's work time and the UI frame rate, and the host-path texture
  upload at 512².
* Render: the viewer's FrameRenderer at the default model size (the embedded checkpoint, or a
  random ``tiny`` model with the same size when it is missing), torch threads = cores - 1 as in the
  viewer: orbit with the tri-plane cache (camera changes only), scrubbing the timeline without it
  (every frame recomputes the backbone), and the progressive-refinement preview (raw 16² render).
* With CUDA: fps at 512² of the interop vs host display paths (needs a GL context: Xvfb or a display).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def model_path(arg: str | None, tmp: Path) -> tuple[Path, str]:
    from pv3d_core.paths import default_checkpoint

    p = Path(arg) if arg else default_checkpoint()
    if p.exists():
        return p, p.name
    import torch

    from pv3d_core.config import preset
    from pv3d_core.io import build_generator, save_generator

    torch.manual_seed(0)
    out = tmp / "tiny-random.safetensors"
    save_generator(out, build_generator(preset("tiny")), name="tiny")
    return out, "random tiny (default checkpoint missing)"


def render_bench(ckpt: Path, frames: int, device: str) -> list[tuple[str, float, float]]:
    import torch

    from pv3d_core.io import load_generator
    from pv3d_core.pipeline import FrameRenderer
    from pv3d_viewer import state as S

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    G = load_generator(ckpt, device=device)
    r = FrameRenderer(G)
    base = S.render_settings(S.ViewerState(resolution=G.img_resolution, t=0.3))
    rows = []

    def run(name, settings):
        r.render(settings[0])                         # warm-up (and fills the tri-plane cache)
        ts = []
        for s in settings[1:]:
            t0 = time.perf_counter()
            r.render(s)
            ts.append(time.perf_counter() - t0)
        med = statistics.median(ts)
        rows.append((name, 1.0 / med, med * 1e3))

    run(f"orbit, tri-plane cache ({G.img_resolution}²)",
        [base.with_(yaw=math.radians(-30 + 60 * i / frames)) for i in range(frames + 1)])
    run(f"scrub t, no cache ({G.img_resolution}²)",
        [base.with_(t=round(i / (frames + 1), 6), use_cache=False) for i in range(frames + 1)])
    run("drag preview: raw 16² upscaled, cache",
        [S.render_settings(S.ViewerState(resolution=G.img_resolution, t=0.3, yaw=-30 + 60 * i / frames),
                           preview=True) for i in range(frames + 1)])
    return rows


def ui_bench(ckpt: Path, seconds: float, tmp: Path) -> dict:
    from pv3d_viewer.control import HarnessError, launch_viewer, start_xvfb

    env = dict(os.environ, PV3D_VIEWER_CONFIG=str(tmp / "cfg"), PYTHONPATH=str(ROOT))
    xvfb = app = None
    try:
        if not env.get("DISPLAY"):
            try:
                xvfb, env["DISPLAY"] = start_xvfb()
            except HarnessError as e:
                raise SystemExit(f"no DISPLAY and {e}: run with --no-ui") from None
        try:
            app, c = launch_viewer(str(tmp / "ctl.sock"), ["--ckpt", str(ckpt)], env, str(ROOT))
        except HarnessError as e:
            raise SystemExit(str(e)) from None
        while not c.call("state")["settled"]:
            time.sleep(0.1)
        # continuous rendering: the camera moves every 50 ms (the worker is always busy)
        end = time.time() + seconds
        i = 0
        c.call("state")
        first_shown = c.call("state")["frames_shown"]
        t_start = time.time()
        while time.time() < end:
            c.call("set", yaw=-30 + (i * 3) % 60)
            i += 1
            time.sleep(0.05)
        s = c.call("state")
        ms = sorted(s["ui_frame_ms"])
        out = {"ui_ms_median": statistics.median(ms), "ui_ms_p95": ms[int(0.95 * (len(ms) - 1))],
               "ui_fps": s["ui_fps"], "frames_shown_per_s": (s["frames_shown"] - first_shown) / (time.time() - t_start)}
        out["parts"] = s["ui_frame_parts"]
        # the same with the worker idle: a two-frame loop plays from the cache
        c.call("set", frames_per_clip=2, t=0.0, playing=True)
        time.sleep(3)
        s2 = c.call("state")
        time.sleep(2)
        s2 = c.call("state")
        ms2 = sorted(s2["ui_frame_ms"])
        out["idle_ms_median"] = statistics.median(ms2)
        out["idle_parts"] = s2["ui_frame_parts"]
        c.call("set", playing=False)
        c.call("set", resolution=512, yaw=0.0)
        while not c.call("state")["settled"]:
            time.sleep(0.1)
        out["upload_512_ms"] = c.call("state")["upload_ms"]
        out["display_path"] = s["display_path"]
        c.call("quit")
        app.wait(60)
        return out
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(30)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="checkpoint (default: the embedded model, else a random tiny one)")
    ap.add_argument("--seconds", type=float, default=6.0, help="UI measurement time")
    ap.add_argument("--frames", type=int, default=12, help="timed frames per render case")
    ap.add_argument("--no-ui", action="store_true", help="skip the windowed measurement")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt, label = model_path(args.ckpt, tmp)
        print(f"model: {label}   device: {args.device}   cores: {os.cpu_count()}   torch threads: "
              f"{max(1, (os.cpu_count() or 2) - 1)}")
        rows = render_bench(ckpt, args.frames, args.device)
        print(f"\n{'render case':46s} {'fps':>7s} {'ms/frame':>9s}")
        for name, fps, ms in rows:
            print(f"{name:46s} {fps:7.2f} {ms:9.1f}")
        if not args.no_ui:
            u = ui_bench(ckpt, args.seconds, tmp)
            print(f"\n{'UI while rendering (real app, Xvfb + Mesa)':46s} {'value':>9s}")
            print(f"{'UI frame work time, median (ms)':46s} {u['ui_ms_median']:9.1f}")
            print(f"{'UI frame work time, p95 (ms)':46s} {u['ui_ms_p95']:9.1f}")
            print(f"{'UI fps this allows (1000 / median)':46s} {1000 / u['ui_ms_median']:9.1f}")
            print(f"{'new frames shown per second':46s} {u['frames_shown_per_s']:9.2f}")
            print(f"{'texture upload 512² (' + u['display_path'] + ' path, ms)':46s} {u['upload_512_ms']:9.2f}")
            print(f"{'UI frame work time, worker idle, median (ms)':46s} {u['idle_ms_median']:9.1f}")
            for label, parts in (("while rendering", u["parts"]), ("worker idle", u["idle_parts"])):
                print(f"  parts {label}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

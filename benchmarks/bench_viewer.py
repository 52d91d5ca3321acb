"""Viewer performance: the UI loop while rendering, orbiting, playback, and the render paths.

    python benchmarks/bench_viewer.py [--ckpt PATH] [--seconds 6] [--frames 12] [--no-ui] [--device cpu]

* Render: the viewer's renderer (``pv3d_viewer.worker.fast_renderer``: NHWC, the fused CPU kernels when
  they build) on the default model (the embedded checkpoint, or a random ``tiny`` model of the same
  size when it is missing), torch threads = cores - 1 as in the viewer: orbit with the tri-plane cache
  (camera changes only), scrubbing the timeline without it (every frame recomputes the backbone), and
  the progressive-refinement previews (raw 16² and 32² renders, upscaled).
* UI (the real app under its own Xvfb when $DISPLAY is unset), :func:`interactive`:
  - drag: the mouse held down on the viewport and moved every 20 ms with xdotool, as a person orbits;
    the UI loop's frame rate (the spacing of its frames), the frames shown per second (previews while
    the mouse moves) and the UI frame's work time;
  - orbit: the camera moved through the control socket every 50 ms, full-quality frames shown per second;
  - playback: the timeline played in the real-time mode, timeline speed (clips per second, 0.5 is real
    time) and frames shown per second; the same in "every frame" mode; then real-time playback from a
    view not rendered before, pass by pass over the clip (50 frames = 25 fps at real time), to show
    when the frame cache lets the clip play in full.
  ``benchmarks/bench_viewer_jobs.py load`` runs the same measurements with a portrait fit running.
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
    from pv3d_viewer import state as S
    from pv3d_viewer.worker import fast_renderer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    G = load_generator(ckpt, device=device)
    r = fast_renderer(G)
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
    for nr in (16, 32):
        run(f"drag preview: raw {nr}² upscaled, cache",
            [S.render_settings(S.ViewerState(resolution=G.img_resolution, t=0.3, yaw=-30 + 60 * i / frames),
                               preview=True).with_(neural_resolution=nr) for i in range(frames + 1)])
    return rows


# ------------------------------------------------------------------------------------ the real app

def xdo(env, *args) -> str:
    import subprocess

    return subprocess.run(["xdotool", *args], env=env, check=True, capture_output=True, text=True).stdout


def interactive(c, env, seconds: float = 6.0, loops: int = 5) -> dict:
    """Drag, orbit and playback measurements on a running viewer (control client ``c``, its ``env``);
    ``loops`` passes of real-time playback from a fresh view (:func:`playback_loops`)."""
    out = {}
    c.call("set", playing=False, t=0.3, yaw=0.0)
    while not c.call("state")["settled"]:
        time.sleep(0.1)
    # drag with the mouse (xdotool): the UI loop runs flat out, previews are shown while the mouse moves
    s = c.call("state")
    x, y, w, h = s["viewport"]
    wid = xdo(env, "search", "--name", "PV3D Studio").split()[0]
    xdo(env, "windowfocus", "--sync", wid)
    xdo(env, "mousemove", "--window", wid, str(x + w // 2), str(y + h // 2))
    xdo(env, "mousedown", "1")
    s0 = c.call("state")
    t0 = time.time()
    while time.time() - t0 < seconds:
        step = 4 if int(time.time() - t0) % 2 == 0 else -4      # back and forth, a second each way
        xdo(env, "mousemove_relative", "--", str(step), "0")
        time.sleep(0.02)
    s1 = c.call("state")
    xdo(env, "mouseup", "1")
    dt = time.time() - t0
    ms = sorted(s1["ui_frame_ms"])
    out["drag"] = {"ui_fps": s1["ui_fps"], "frames_shown_per_s": (s1["frames_shown"] - s0["frames_shown"]) / dt,
                   "ui_frame_ms_median": statistics.median(ms), "ui_frame_ms_p95": ms[int(0.95 * (len(ms) - 1))]}
    while not c.call("state")["settled"]:
        time.sleep(0.1)
    # orbit through the control socket: every shown frame is a full one
    s0 = c.call("state")
    t0 = time.time()
    i = 0
    while time.time() - t0 < seconds:
        c.call("set", yaw=float(-30 + (i * 3) % 60))
        i += 1
        time.sleep(0.05)
    s1 = c.call("state")
    out["orbit_full_frames_per_s"] = (s1["frames_shown"] - s0["frames_shown"]) / (time.time() - t0)
    # playback, both clocks
    for mode in ("realtime", "every frame"):
        c.call("set", playing=False, t=0.0, speed=1.0, playback_mode=mode)
        c.call("set", playing=True)
        time.sleep(1.0)
        s0 = c.call("state")
        t0 = time.time()
        time.sleep(seconds)
        s1 = c.call("state")
        dt = time.time() - t0
        c.call("set", playing=False)
        out[f"playback_{mode}"] = {
            "clips_per_s": (s1["playback"]["distance"] - s0["playback"]["distance"]) / dt,
            "frames_shown_per_s": (s1["frames_shown"] - s0["frames_shown"]) / dt,
            "dropped_per_s": (s1["playback"]["dropped"] - s0["playback"]["dropped"]) / dt,
            "ui_fps": s1["ui_fps"], "render_ms": s1["render_ms"]}
    out["playback_loops"] = playback_loops(c, loops)
    c.call("set", playback_mode="realtime", t=0.3)
    out["kernels"] = s1["kernels"]
    return out


def playback_loops(c, loops: int) -> list[dict]:
    """Real-time playback loop by loop, from a view not rendered before (its frame cache is empty): the
    frames shown and dropped in each pass over the clip. The first pass shows what rendering keeps up
    with; later passes add the frames the cache gained, until the clip plays from it at the full rate."""
    c.call("set", playing=False, t=0.0, speed=1.0, playback_mode="realtime", yaw=17.0, pitch=-3.0)
    c.call("set", playing=True)
    rows, last, t_last = [], c.call("state"), time.time()
    start = last["playback"]["distance"]
    while len(rows) < loops:
        time.sleep(0.02)
        s = c.call("state")
        if s["playback"]["distance"] - start >= len(rows) + 1:        # one more pass over the clip
            now = time.time()
            rows.append({"frames_shown_per_s": (s["frames_shown"] - last["frames_shown"]) / (now - t_last),
                         "dropped": s["playback"]["dropped"] - last["playback"]["dropped"],
                         "clips_per_s": (s["playback"]["distance"] - last["playback"]["distance"]) / (now - t_last)})
            last, t_last = s, now
    c.call("set", playing=False, yaw=0.0, pitch=0.0)
    return rows


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


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
        out = interactive(c, env, seconds)
        # the UI with the worker idle: a two-frame loop plays from the cache
        c.call("set", frames_per_clip=2, t=0.0, playing=True)
        time.sleep(3)
        s2 = c.call("state")
        ms2 = sorted(s2["ui_frame_ms"])
        out["idle_ms_median"] = statistics.median(ms2)
        out["idle_parts"] = s2["ui_frame_parts"]
        out["idle_ui_fps"] = s2["ui_fps"]
        c.call("set", playing=False)
        c.call("set", resolution=512, yaw=0.0)
        while not c.call("state")["settled"]:
            time.sleep(0.1)
        out["upload_512_ms"] = c.call("state")["upload_ms"]
        out["display_path"] = c.call("state")["display_path"]
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


def print_interactive(u: dict) -> None:
    d = u["drag"]
    print(f"{'drag (xdotool): UI loop':46s} {d['ui_fps']:7.1f} fps  (work {d['ui_frame_ms_median']:.1f} ms median, "
          f"{d['ui_frame_ms_p95']:.1f} p95)")
    print(f"{'drag: frames shown (previews)':46s} {d['frames_shown_per_s']:7.1f} /s")
    print(f"{'orbit (socket): full frames shown':46s} {u['orbit_full_frames_per_s']:7.1f} /s")
    for mode in ("realtime", "every frame"):
        p = u[f"playback_{mode}"]
        print(f"{'playback ' + mode + ': timeline speed':46s} {p['clips_per_s']:7.3f} clips/s (0.5 = real time), "
              f"{p['frames_shown_per_s']:.1f} frames/s shown, {p['dropped_per_s']:.1f} dropped/s, UI {p['ui_fps']:.0f} fps")
    loops = u.get("playback_loops") or []
    if loops:
        print(f"{'playback realtime, new view, pass by pass':46s} " + " | ".join(
            f"{r['frames_shown_per_s']:.1f}/s ({r['dropped']} dropped)" for r in loops))


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
              f"{max(1, (os.cpu_count() or 2) - 1)}   load average: {load_average()}")
        rows = render_bench(ckpt, args.frames, args.device)
        print(f"\n{'render case':46s} {'fps':>7s} {'ms/frame':>9s}")
        for name, fps, ms in rows:
            print(f"{name:46s} {fps:7.2f} {ms:9.1f}")
        if not args.no_ui:
            u = ui_bench(ckpt, args.seconds, tmp)
            print(f"\nreal app under Xvfb + Mesa ({u['display_path']} display; {u['kernels']})")
            print_interactive(u)
            print(f"{'UI while idle (2-frame loop from the cache)':46s} {u['idle_ui_fps']:7.1f} fps, "
                  f"{u['idle_ms_median']:.1f} ms work/frame")
            print(f"{'texture upload 512² (ms)':46s} {u['upload_512_ms']:9.2f}")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

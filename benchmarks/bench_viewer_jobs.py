"""The viewer's background jobs as a user meets them: the real `pv3d-viewer` under Xvfb, driven through
its control socket (the same handlers as the widgets and glfw's drop callback).

    python benchmarks/bench_viewer_jobs.py export [--runs 3] [--frames 64] [--root DIR ...]
    python benchmarks/bench_viewer_jobs.py portrait [--photo PATH] [--out DIR]

`export` times a mp4 export job on the default model; give several ``--root`` checkouts (e.g. a
worktree of an older commit and this one) to compare them in alternating runs of one session.
`portrait` drops a photo (default: scikit-image's astronaut), times the fit, saves the frames at the
photo's camera turned -20/0/+20 degrees and exports the portrait's clip. Needs Xvfb.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Viewer:
    def __init__(self, display: str, root: Path, tmp: Path):
        from pv3d_viewer.control import HarnessError, launch_viewer

        env = dict(os.environ, DISPLAY=display, PV3D_VIEWER_CONFIG=str(tmp / "cfg"), PYTHONPATH=str(root))
        t0 = time.perf_counter()
        try:
            self.proc, self.c = launch_viewer(
                str(tmp / "ctl.sock"), ["--ckpt", str(ROOT / "checkpoints" / "pv3d-tiny-synthheads.safetensors")],
                env, str(root), open(tmp / "viewer.log", "wb"))
        except HarnessError as e:
            raise SystemExit(f"{e}\n{(tmp / 'viewer.log').read_text()}") from None
        self.settle()
        self.startup_s = time.perf_counter() - t0

    def state(self):
        return self.c.call("state")

    def settle(self):
        while not self.state()["settled"]:
            time.sleep(0.1)

    def wait_job(self, poll=0.05):
        while True:
            j = self.state()["jobs"][-1]
            if j["done"]:
                return j
            time.sleep(poll)

    def quit(self):
        self.c.call("quit")
        self.proc.wait(30)


def run_export(args, display):
    roots = [Path(r).resolve() for r in (args.root or [ROOT])]
    times = {str(r): [] for r in roots}
    for rep in range(args.runs):
        for r in roots:
            with tempfile.TemporaryDirectory() as d:
                v = Viewer(display, r, Path(d))
                time.sleep(1.0)
                t0 = time.perf_counter()
                v.c.call("export", kind="mp4", path=str(Path(d) / "clip.mp4"), export_frames=args.frames)
                j = v.wait_job()
                times[str(r)].append(time.perf_counter() - t0)
                print(r, rep, f"{times[str(r)][-1]:.2f} s", j["error"] or "", flush=True)
                v.quit()
    return {"frames": args.frames, "runs": times, "median_s": {k: statistics.median(v) for k, v in times.items()}}


def run_portrait(args, display):
    import numpy as np
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = Path(args.photo) if args.photo else out / "astronaut.png"
    if not args.photo:
        import skimage.data

        Image.fromarray(skimage.data.astronaut()).save(photo)
    v = Viewer(display, ROOT, out)
    t0 = time.perf_counter()
    r = v.c.call("drop", paths=[str(photo)])
    j = v.wait_job(poll=1.0)
    fit_s = time.perf_counter() - t0
    s = v.state()
    base_yaw, base_pitch = s["state"]["yaw"], s["state"]["pitch"]
    frames = {}
    for dy in (-20, 0, 20):
        v.c.call("set", yaw=base_yaw + dy)
        v.settle()
        p = out / f"frame_{dy:+d}.png"
        v.c.call("frame", path=str(p))
        frames[dy] = str(p)
    t1 = time.perf_counter()
    v.c.call("export", kind="mp4", path=str(out / "portrait.mp4"))
    e = v.wait_job()
    export_s = time.perf_counter() - t1
    v.quit()
    imgs = [np.asarray(Image.open(frames[d]).convert("RGB")) for d in (-20, 0, 20)]
    Image.fromarray(np.concatenate(imgs, 1)).save(out / "frames_row.png")
    return {"startup_s": round(v.startup_s, 1), "drop": r.get("outcomes"), "fit_s": round(fit_s, 1),
            "fit_error": j["error"], "model_after": s["model"], "photo_view_deg": [base_yaw, base_pitch],
            "export_s": round(export_s, 1), "export": e["result"], "frames": frames}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("export")
    a.add_argument("--runs", type=int, default=3)
    a.add_argument("--frames", type=int, default=64)
    a.add_argument("--root", action="append", help="a checkout to run the viewer from (repeatable)")
    b = sub.add_parser("portrait")
    b.add_argument("--photo")
    b.add_argument("--out", default="bench_viewer_portrait")
    args = ap.parse_args()
    from pv3d_viewer.control import start_xvfb

    xv, display = start_xvfb()
    try:
        res = run_export(args, display) if args.mode == "export" else run_portrait(args, display)
    finally:
        xv.terminate()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

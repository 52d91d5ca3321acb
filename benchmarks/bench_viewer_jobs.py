"""The viewer's background jobs as a user meets them: the real `pv3d-viewer` under Xvfb, driven through
its control socket (the same handlers as the widgets and glfw's drop callback).

    python benchmarks/bench_viewer_jobs.py export [--runs 3] [--frames 64] [--root DIR ...]
    python benchmarks/bench_viewer_jobs.py portrait [--photo PATH] [--out DIR] [--runs N] [--env K=V ...] [--export]
    python benchmarks/bench_viewer_jobs.py load [--seconds 6] [--job-nice 10 0]
    python benchmarks/bench_viewer_jobs.py idle [--runs 2] [--seconds 10] [--root DIR ...]

`export` times a mp4 export job on the default model; give several ``--root`` checkouts (e.g. a
worktree of an older commit and this one) to compare them in alternating runs of one session.
`portrait` drops a photo (default: scikit-image's astronaut), times the fit as the user sees it (first
result, live states shown, each stage's start), saves the frames at the photo's camera turned
-20/0/+20 degrees and (``--export``) exports the portrait's clip. ``--env`` given twice runs an A/B of
two environments alternately, ``--runs`` times each.
`load` measures the viewer while a portrait fit shares the CPU (issue 14): drag (UI fps, previews),
orbit (full frames per second) and playback (timeline speed, frames shown) from
``bench_viewer.interactive``, first with nothing else running, then during a fit of the astronaut, for
each ``--job-nice`` (how many nice levels the job's thread drops; 0 = the same priority as the UI).
`idle` measures the cores an idle viewer uses (its whole process: UI loop, render worker, the
software OpenGL's threads); with several ``--root`` checkouts, alternately.
Needs Xvfb.
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
sys.path.insert(0, str(ROOT / "benchmarks"))


class Viewer:
    def __init__(self, display: str, root: Path, tmp: Path, env: dict | None = None):
        from pv3d_viewer.control import HarnessError, launch_viewer

        env = dict(os.environ, DISPLAY=display, PV3D_VIEWER_CONFIG=str(tmp / "cfg"), PYTHONPATH=str(root),
                   **(env or {}))
        self.env = env
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


def env_variant(text: str) -> dict:
    """``--env KEY=VAL[,KEY=VAL]`` -> {KEY: VAL}."""
    pairs = [kv for kv in text.split(",") if kv]
    if not pairs or any("=" not in kv or not kv.split("=", 1)[0] for kv in pairs):
        raise argparse.ArgumentTypeError(f"expected KEY=VAL[,KEY=VAL], got {text!r}")
    return dict(kv.split("=", 1) for kv in pairs)


def checkouts(args) -> list[Path]:
    """The ``--root`` checkouts to run the viewer from (this one when none is given)."""
    return [Path(r).resolve() for r in (args.root or [ROOT])]


def alternated_viewers(args, display):
    """(round, checkout, viewer, its scratch folder): ``--runs`` rounds over the ``--root`` checkouts, one
    after the other within a round so that the machine's load falls on all alike; each viewer is quit
    (and its folder removed) when the caller asks for the next one."""
    for rep in range(args.runs):
        for r in checkouts(args):
            with tempfile.TemporaryDirectory() as d:
                v = Viewer(display, r, Path(d))
                yield rep, r, v, Path(d)
                v.quit()


def run_export(args, display):
    times = {str(r): [] for r in checkouts(args)}
    for rep, r, v, d in alternated_viewers(args, display):
        time.sleep(1.0)
        t0 = time.perf_counter()
        v.c.call("export", kind="mp4", path=str(d / "clip.mp4"), export_frames=args.frames)
        j = v.wait_job()
        times[str(r)].append(time.perf_counter() - t0)
        print(r, rep, f"{times[str(r)][-1]:.2f} s", j["error"] or "", flush=True)
    return {"frames": args.frames, "runs": times, "median_s": {k: statistics.median(v) for k, v in times.items()}}


def watch_fit(v: "Viewer", poll: float = 0.25, shots: Path | None = None, shot_every: float = 30.0) -> dict:
    """Follow a portrait fit as the user sees it: when the first result shows (the model's name turns
    to "portrait (..., fitting)"), how many live states were shown (the worker's epoch moves), when each
    stage began (from the progress label), and when the job ended. ``shots``: a folder for screenshots
    of the window at the first result and every ``shot_every`` seconds after it."""
    t0 = time.perf_counter()
    first = None
    epochs, stages = set(), {}
    s0 = v.state()
    next_shot = 0.0
    labels, next_label = [], 0.0
    while True:
        s = v.state()
        t = time.perf_counter() - t0
        if "fitting" in (s["model"] or ""):
            first = t if first is None else first
            epochs.add(s["epoch"])
            if shots is not None and t >= next_shot:
                v.c.call("screenshot", path=str(shots / f"drop_{t:05.1f}s.png"))
                next_shot = (first if next_shot == 0.0 else next_shot) + shot_every
        j = s["jobs"][-1]
        if t >= next_label:             # the progress label (its time left) and the job's threads every 10 s
            labels.append((round(t, 1), j["status"], j.get("threads")))
            next_label += 10.0
        stage = (j["status"] or "").split(" ")[0]
        if stage and stage not in stages:
            stages[stage] = round(t, 1)
        if j["done"]:
            # the render worker's frames and the UI's drawn frames during the fit (each costs the fit cores)
            return {"job": j, "fit_s": t, "first_result_s": None if first is None else round(first, 2),
                    "previews_shown": len(epochs), "stage_start_s": stages, "labels": labels,
                    "worker_renders": s["rendered"] - s0["rendered"],
                    "ui_frames_drawn": s["ui_frames_drawn"] - s0["ui_frames_drawn"]}
        time.sleep(poll)


def run_portrait(args, display):
    import numpy as np
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = Path(args.photo) if args.photo else out / "astronaut.png"
    if not args.photo:
        import skimage.data

        Image.fromarray(skimage.data.astronaut()).save(photo)
    envs = args.env or [{}]
    roots = checkouts(args)
    variants = [(r, e) for r in roots for e in envs]
    runs = []
    for rep in range(args.runs):
        for k, (root, env) in enumerate(variants):
            tag = " ".join(([str(root)] if len(roots) > 1 else []) + [f"{a}={b}" for a, b in env.items()]) or "as is"
            d = out / f"run{rep}_{k}"
            d.mkdir(parents=True, exist_ok=True)
            v = Viewer(display, root, d, env=env)
            r = v.c.call("drop", paths=[str(photo)])
            w = watch_fit(v, poll=args.poll, shots=d if args.shots else None)
            t_done = time.perf_counter()
            s = v.state()
            while "fitting" in (s["model"] or "") and time.perf_counter() - t_done < 30:
                time.sleep(0.1)         # the job is done; the UI installs its result at its next turn
                s = v.state()
            base_yaw, base_pitch = s["state"]["yaw"], s["state"]["pitch"]
            if args.shots:
                v.c.call("screenshot", path=str(d / f"drop_{w['fit_s']:05.1f}s_done.png"))
            frames = {}
            for dy in (-20, 0, 20):
                v.c.call("set", yaw=base_yaw + dy)
                v.settle()
                p = d / f"frame_{dy:+d}.png"
                v.c.call("frame", path=str(p))
                frames[dy] = str(p)
            export_s = None
            if args.export:
                t1 = time.perf_counter()
                v.c.call("export", kind="mp4", path=str(d / "portrait.mp4"))
                v.wait_job()
                export_s = round(time.perf_counter() - t1, 1)
            v.quit()
            imgs = [np.asarray(Image.open(frames[x]).convert("RGB")) for x in (-20, 0, 20)]
            Image.fromarray(np.concatenate(imgs, 1)).save(d / "frames_row.png")
            res = {"variant": tag, "rep": rep, "startup_s": round(v.startup_s, 1), "drop": r.get("outcomes"),
                   "fit_s": round(w["fit_s"], 1), "first_result_s": w["first_result_s"],
                   "previews_shown": w["previews_shown"], "stage_start_s": w["stage_start_s"],
                   "labels": w["labels"], "worker_renders": w["worker_renders"],
                   "ui_frames_drawn": w["ui_frames_drawn"],
                   "fit_error": w["job"]["error"], "model_after": s["model"],
                   "photo_view_deg": [base_yaw, base_pitch], "export_s": export_s, "frames": str(d)}
            print(json.dumps(res), flush=True)
            runs.append(res)
    med = {}
    for res in runs:
        med.setdefault(res["variant"], []).append(res["fit_s"])
    return {"runs": runs, "median_fit_s": {k: statistics.median(x) for k, x in med.items()},
            "load_average": os.getloadavg()}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of every thread of a process so far (Linux /proc)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_idle(args, display):
    """How many cores an idle viewer uses (its UI loop, the software OpenGL's threads, everything in
    its process), after it settled on the default model; alternating checkouts."""
    cores = {str(r): [] for r in checkouts(args)}
    for rep, r, v, _ in alternated_viewers(args, display):
        time.sleep(2.0)                 # past the input tail of the launch
        a, t = process_cpu_s(v.proc.pid), time.perf_counter()
        time.sleep(args.seconds)
        used = (process_cpu_s(v.proc.pid) - a) / (time.perf_counter() - t)
        cores[str(r)].append(round(used, 3))
        print(r, rep, f"{used:.3f} cores", flush=True)
    return {"seconds": args.seconds, "cores": cores, "median": {k: statistics.median(x) for k, x in cores.items()}}


def run_load(args, display):
    import skimage.data
    from PIL import Image

    from bench_viewer import interactive, load_average, print_interactive

    out = {}
    with tempfile.TemporaryDirectory() as d:
        photo = Path(d) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).save(photo)
        for nice in args.job_nice:
            (Path(d) / f"nice{nice}").mkdir()
            v = Viewer(display, ROOT, Path(d) / f"nice{nice}", env={"PV3D_JOB_NICE": str(nice)})
            res = {"alone": interactive(v.c, v.env, args.seconds), "load_before": load_average()}
            r = v.c.call("drop", paths=[str(photo)])
            job = v.state()["jobs"][-1]
            time.sleep(10)                               # past the face detection: the fit's steps run now
            res["fit"] = interactive(v.c, v.env, args.seconds)
            j = next(j for j in v.state()["jobs"] if j["id"] == job["id"])
            res["fit_progress"], res["fit_status"] = j["progress"], j["status"]
            v.c.call("cancel_jobs")
            res["load_after"] = load_average()
            v.quit()
            out[f"job_nice_{nice}"] = res
            for case in ("alone", "fit"):
                print(f"\n--- job nice {nice}, {'nothing else running' if case == 'alone' else 'portrait fit running'}"
                      f" (drop: {r.get('outcomes')}; load {res['load_before']} -> {res['load_after']})", flush=True)
                print_interactive(res[case])
    return out


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("export")
    a.add_argument("--runs", type=int, default=3)
    a.add_argument("--frames", type=int, default=64)
    a.add_argument("--root", action="append", help="a checkout to run the viewer from (repeatable)")
    i = sub.add_parser("idle")
    i.add_argument("--runs", type=int, default=2)
    i.add_argument("--seconds", type=float, default=10.0)
    i.add_argument("--root", action="append", help="a checkout to run the viewer from (repeatable)")
    c = sub.add_parser("load")
    c.add_argument("--seconds", type=float, default=6.0)
    c.add_argument("--job-nice", type=int, nargs="+", default=[10, 0])
    b = sub.add_parser("portrait")
    b.add_argument("--photo")
    b.add_argument("--out", default="bench_viewer_portrait")
    b.add_argument("--runs", type=int, default=1)
    b.add_argument("--env", action="append", type=env_variant,
                   help="environment for one variant, KEY=VAL[,KEY=VAL]; repeat for an A/B in alternating runs")
    b.add_argument("--root", action="append",
                   help="a checkout to run the viewer from (repeatable; it needs a pv3d_viewer link to its viewer/)")
    b.add_argument("--poll", type=float, default=0.25, help="seconds between two looks at the viewer's state")
    b.add_argument("--shots", action="store_true",
                   help="screenshots of the window at the first result, every 30 s, and at the end")
    b.add_argument("--export", action="store_true", help="also time an mp4 export of the portrait")
    args = ap.parse_args()
    from pv3d_viewer.control import start_xvfb

    xv, display = start_xvfb()
    try:
        run = {"export": run_export, "portrait": run_portrait, "load": run_load, "idle": run_idle}[args.mode]
        res = run(args, display)
    finally:
        xv.terminate()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

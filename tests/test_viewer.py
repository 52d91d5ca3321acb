"""pv3d-viewer: state logic and the worker in-process; the real app under Xvfb + Mesa, driven by a
test script (set controls, drop files, export, dump state, screenshots) and by xdotool (mouse, keys)."""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from viewer.state import ViewerState
from viewer.worker import FrameCache, RenderWorker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


# ------------------------------------------------------------------------------------ pure logic

def test_state_playback_modes():
    s = ViewerState(playing=True, speed=1.0)
    s.advance(0.75)
    assert math.isclose(s.t, 0.75)
    s.advance(0.5)                       # wrap
    assert math.isclose(s.t, 0.25)
    p = ViewerState(playing=True, speed=1.0, loop_mode="ping-pong", t=0.75)
    p.advance(0.5)                       # bounces off 1
    assert math.isclose(p.t, 0.75) and p.direction == -1.0
    paused = ViewerState(t=0.3)
    paused.advance(1.0)
    assert paused.t == 0.3


def test_long_clip_chains_motion_seeds_through_t0():
    s = ViewerState(playing=True, speed=1.0, long_clip=True, long_clip_seeds=3, motion_seed=10)
    seen = []
    for _ in range(600):
        s.advance(0.01)
        seen.append((s.motion_seed_now(), s.t))
    seeds = [m for m, _ in seen]
    assert set(seeds) == {10, 11, 12}
    for (m0, t0), (m1, t1) in zip(seen, seen[1:]):
        if m0 != m1:                      # a switch happens only near the canonical frame
            assert t0 < 0.02 and t1 < 0.02
        assert abs(t1 - t0) < 0.03        # and t never jumps


def test_orbit_zoom_and_reset():
    s = ViewerState()
    s.orbit(100, 0, 500)
    assert s.yaw < 0 and s.pitch == 0
    s.orbit(0, 10_000, 500)
    assert s.pitch == pytest.approx(-math.radians(60))
    r = s.radius
    s.zoom(2)
    assert s.radius < r
    s.reset_view()
    assert s.yaw == 0 and s.pitch == 0 and s.settings().yaw == 0
    s.interacting = True
    assert s.settings().view == "raw" and s.settings(preview=False).view == "final"


def test_settings_store_roundtrip_and_damaged_file(tmp_path, monkeypatch):
    from viewer import settings_store

    cfg = tmp_path / "sub" / "viewer.json"
    monkeypatch.setenv("PV3D_VIEWER_CONFIG", str(cfg))
    assert settings_store.load()["window"] == [1280, 800]
    settings_store.save({"last_checkpoint": "/x.ckpt", "window": [900, 700], "export_folder": "/tmp/e"})
    d = settings_store.load()
    assert d["last_checkpoint"] == "/x.ckpt" and d["window"] == [900, 700]
    cfg.write_text("{broken")
    assert settings_store.load()["window"] == [1280, 800]


class _SlowRenderer:
    """Stands in for FrameRenderer: 0.2 s per frame, records what it rendered; seed 13 fails."""

    def __init__(self):
        self.rendered = []

    def render(self, s):
        import torch

        from pv3d_core.pipeline import Frame

        time.sleep(0.2)
        if s == "boom":
            raise RuntimeError("planned failure")
        self.rendered.append(s)
        return Frame(torch.zeros(4, 4, 3, dtype=torch.uint8), {"render": 200.0}, False, s)


def test_worker_latest_request_wins_and_errors_surface():
    w = RenderWorker(threads=1)
    w.renderer = _SlowRenderer()
    try:
        for g in range(1, 6):              # five requests while the first is rendering
            w.request(g, f"s{g}")
            time.sleep(0.01)
        results = []
        t0 = time.time()
        while time.time() - t0 < 5 and not any(r.generation == 5 for r in results):
            results += w.poll()
            time.sleep(0.02)
        rendered = w.renderer.rendered
        assert rendered[-1] == "s5" and len(rendered) <= 2      # intermediate requests were skipped
        assert [r.generation for r in results][-1] == 5
        w.request(6, "boom")
        t0 = time.time()
        err = []
        while time.time() - t0 < 5 and not err:
            err = [r for r in w.poll() if r.error]
            time.sleep(0.02)
        assert err and "planned failure" in err[0].error and w.alive   # shown, and the worker lives on
        # a cached frame is served without rendering again
        n = len(w.renderer.rendered)
        w.request(7, "s5")
        time.sleep(0.4)
        assert len(w.renderer.rendered) == n and any(r.from_cache for r in w.poll())
    finally:
        w.stop()
    assert not w.alive


def test_frame_cache_is_bounded():
    c = FrameCache(3)
    for i in range(5):
        c.put(i, i)
    assert list(c) == [2, 3, 4] and c.get_frame(0) is None


def test_no_display_names_the_cli(monkeypatch, capsys):
    from viewer.app import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([]) == 2
    assert "pv3d generate" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the real app

def _free_display() -> int:
    for n in range(90, 140):
        if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture(scope="module")
def xvfb():
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (.ci/run installs it: apt-get install xvfb)")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{n}"):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_generator):
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator, save_generator

    d = tmp_path_factory.mktemp("models")
    a = save_generator(d / "model_a.safetensors", tiny_generator, name="tiny")
    import torch

    torch.manual_seed(99)
    G = build_generator(preset("tiny"))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(".bias") and p.ndim == 1:
                p.normal_(0, 0.1)
    b = save_generator(d / "model_b.safetensors", G, name="tiny")
    return a, b


def _run_app(display, script, tmp, ckpt, timeout=300, during=None):
    sp = tmp / "script.json"
    sp.write_text(json.dumps(script))
    env = dict(os.environ, DISPLAY=display, PV3D_VIEWER_CONFIG=str(tmp / "viewer.json"),
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "viewer.app", "--ckpt", str(ckpt), "--size", "1100", "700",
                             "--script", str(sp)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if during:
        during()
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _dump(path):
    return json.loads(Path(path).read_text())


@pytest.mark.gui
@pytest.mark.slow
def test_app_controls_drop_export_and_errors(xvfb, models, tmp_path):
    a, b = models
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    exp = tmp_path / "exports"
    steps = [{"wait_render": 120}, {"screenshot": str(ARTIFACTS / "viewer_first_frame.png")},
             {"dump": str(tmp_path / "d0.json")}]
    # t first: at t = 0 every motion code gives the same (canonical) frame
    controls = [("seed", 3), ("t", 0.8), ("motion_seed", 5), ("psi", 0.3), ("yaw", 0.4), ("pitch", 0.2),
                ("radius", 3.2), ("fov", 14.0), ("view", "raw"), ("view", "depth"), ("view", "normals"),
                ("resolution", 64)]
    for i, (k, v) in enumerate(controls):
        steps += [{"set": {k: v}}, {"wait_render": 60}, {"dump": str(tmp_path / f"c{i}.json")}]
    steps += [{"screenshot": str(ARTIFACTS / "viewer_controls.png")},
              {"set": {"view": "final", "resolution": 0, "t": 0.5, "yaw": 0.0, "pitch": 0.0, "radius": 2.7,
                       "fov": 18.83, "psi": 0.7}}, {"wait_render": 60},
              # render error: shown in the viewport, the app keeps running
              {"break_model": True}, {"set": {"seed": 9}}, {"wait_render": 60},
              {"screenshot": str(ARTIFACTS / "viewer_error.png")}, {"dump": str(tmp_path / "err.json")},
              {"fix_model": True}, {"set": {"seed": 10}}, {"wait_render": 60}, {"dump": str(tmp_path / "ok.json")},
              # export the timeline
              {"set": {"export.frames": 4, "export.fps": 10, "export.folder": str(exp)}},
              {"export": "mp4"}, {"wait_jobs": 200}, {"dump": str(tmp_path / "exp.json")},
              # drops: a text file is refused, a checkpoint loads
              {"drop": [str(text)]}, {"dump": str(tmp_path / "drop_txt.json")},
              {"drop": [str(b)]}, {"wait_render": 120}, {"dump": str(tmp_path / "drop_ckpt.json")},
              {"screenshot": str(ARTIFACTS / "viewer_dropped_model.png")}, {"quit": True}]
    _run_app(xvfb, steps, tmp_path, a)

    d0 = _dump(tmp_path / "d0.json")
    assert d0["error"] is None and d0["texture"]["shape"] == [128, 128, 3] and d0["texture"]["mean"] > 5
    from PIL import Image

    shot = np.asarray(Image.open(ARTIFACTS / "viewer_first_frame.png"))
    assert shot.shape == (700, 1100, 3) and shot[:, 400:].std() > 5      # the viewport is not blank
    prev = d0["texture"]["md5"]
    for i, (k, v) in enumerate(controls):
        d = _dump(tmp_path / f"c{i}.json")
        assert d["error"] is None, d["error"]
        assert d["texture"]["md5"] != prev, f"changing {k} to {v} did not change the image"
        prev = d["texture"]["md5"]
    assert _dump(tmp_path / f"c{len(controls) - 1}.json")["texture"]["shape"] == [64, 64, 3]
    err = _dump(tmp_path / "err.json")
    assert err["error"] and "injected failure" in err["error"]
    ok = _dump(tmp_path / "ok.json")
    assert ok["error"] is None and ok["texture"] is not None
    assert "exports" in _dump(tmp_path / "exp.json")["message"]
    assert "cannot open notes.txt" in _dump(tmp_path / "drop_txt.json")["message"]
    dc = _dump(tmp_path / "drop_ckpt.json")
    assert dc["model"] == "model_b.safetensors" and dc["error"] is None
    assert dc["texture"]["md5"] != ok["texture"]["md5"]
    # the exported mp4 holds the renderer's frames
    mp4s = list(exp.glob("*.mp4"))
    assert len(mp4s) == 1
    import imageio.v2 as imageio

    from pv3d_core.export import ClipSpec, clip_settings
    from pv3d_core.io import load_generator
    from pv3d_core.pipeline import FrameRenderer, RenderSettings

    got = np.stack([np.asarray(f) for f in imageio.mimread(mp4s[0])])
    assert got.shape == (4, 128, 128, 3)
    base = RenderSettings(**ok["settings"])
    want = [FrameRenderer(load_generator(a)).render(s).numpy() for s in clip_settings(base, ClipSpec(frames=4))]
    for g, w in zip(got, want):
        mse = np.mean((g.astype(float) - w.astype(float)) ** 2)
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 30


def _window_id(display):
    for _ in range(100):
        r = subprocess.run(["xdotool", "search", "--name", "PV3D Studio"], env=dict(os.environ, DISPLAY=display),
                           capture_output=True, text=True)
        if r.stdout.strip():
            return r.stdout.split()[0]
        time.sleep(0.1)
    raise AssertionError("the viewer window did not appear")


@pytest.mark.gui
@pytest.mark.slow
def test_mouse_drag_orbits_and_space_plays(xvfb, models, tmp_path):
    if not shutil.which("xdotool"):
        pytest.skip("xdotool is not installed (.ci/run installs it)")
    a, _ = models
    ready = tmp_path / "ready.json"
    steps = [{"wait_render": 120}, {"dump": str(ready)}, {"sleep": 8},
             {"dump": str(tmp_path / "after.json")}, {"screenshot": str(ARTIFACTS / "viewer_after_drag.png")},
             {"quit": True}]
    env = dict(os.environ, DISPLAY=xvfb)

    def drive():
        t0 = time.time()
        while not ready.exists() and time.time() - t0 < 120:
            time.sleep(0.1)
        wid = _window_id(xvfb)
        x, y = 390 + (1100 - 390) // 2, (700 - 28) // 2
        xd = lambda *a: subprocess.run(["xdotool", *a], env=env, check=True)  # noqa: E731
        xd("mousemove", "--window", wid, str(x), str(y))
        time.sleep(0.2)
        xd("mousedown", "1")
        for k in range(1, 11):
            xd("mousemove", "--window", wid, str(x + 12 * k), str(y + 3 * k))
            time.sleep(0.05)
        xd("mouseup", "1")
        time.sleep(0.2)
        xd("key", "--window", wid, "space")

    _run_app(xvfb, steps, tmp_path, a, during=drive)
    before, after = _dump(ready), _dump(tmp_path / "after.json")
    assert after["state"]["yaw"] < -0.1 and after["state"]["pitch"] < 0      # dragged right and down
    assert after["state"]["playing"] is True                                # space started playback
    assert after["texture"]["md5"] != before["texture"]["md5"]

"""The viewer's daily-tool features (issue 18), each used end to end in the real app under Xvfb: keys and
clicks through xdotool, the system file dialog answered by a stand-in zenity (tests/gui_hooks/bin), then
the files it wrote or the pixels it drew checked. Screenshots: tests/artifacts/viewer_feature_*.png."""
import json
import os
import struct
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from viewer_harness import HOOKS, App, job_by_id, xvfb_display

from pv3d_core.paths import default_checkpoint

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def xvfb():
    yield from xvfb_display()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One config folder for the module: the last test restarts the viewer on it."""
    return tmp_path_factory.mktemp("viewer_features")


class DialogApp(App):
    """The app with the stand-in zenity first on its PATH; :meth:`answer` queues what the next dialogs pick."""

    def __init__(self, display, tmp, **kw):
        self.answers = tmp / "dialog_answers.txt"
        self.dialog_log = tmp / "dialog_log.txt"
        self.answers.write_text("")
        env = {"PATH": str(HOOKS / "bin") + os.pathsep + os.environ.get("PATH", ""),
               "PV3D_FAKE_DIALOG_ANSWERS": str(self.answers), "PV3D_FAKE_DIALOG_LOG": str(self.dialog_log)}
        super().__init__(display, tmp, args=["--control-test-faults"], env=env, **kw)

    def answer(self, *paths):
        self.answers.write_text("".join(f"{p}\n" for p in paths))

    def click(self, name):
        s = self.state()
        x, y, w, h = s["widgets"][name]
        wid = self.window_id()
        self.xdo("mousemove", "--window", wid, str(x + w // 2), str(y + h // 2))
        time.sleep(0.15)
        self.xdo("click", "1")
        time.sleep(0.15)

    def key(self, k):
        wid = self.window_id()
        self.xdo("mousemove", "--window", wid, "700", "300")      # over the viewport, not a text field
        self.xdo("key", "--window", wid, k)

    def tab(self, name):
        self.click(f"tab_{name}")
        return self.wait_for(lambda s: s["tab"] == name, what=f"the {name} tab")

    def wait_job(self, job_id=None, name=None, timeout=180):
        end = time.time() + timeout
        while time.time() < end:
            jobs = self.state()["jobs"]
            j = job_by_id(self, job_id) if job_id else next((j for j in reversed(jobs) if j["name"] == name), None)
            if j and j["done"]:
                return j
            time.sleep(0.1)
        raise AssertionError(f"job {job_id or name} did not finish")


@pytest.fixture(scope="module")
def app(xvfb, home):
    if not default_checkpoint().is_file():
        pytest.skip("the embedded default model is missing")
    a = DialogApp(xvfb, home)
    yield a
    if a.proc.poll() is None:
        assert a.quit() == 0, a.logpath.read_text()


def frame(app):
    from PIL import Image

    p = app.tmp / "frame.png"
    app.call("frame", path=str(p))
    return np.asarray(Image.open(p)).astype(np.float64)


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-9))


def reference(settings_list):
    """The library's own frames for a list of RenderSettings (what the CLI would write)."""
    from pv3d_core.io import load_generator
    from pv3d_core.pipeline import FrameRenderer

    r = FrameRenderer(load_generator(default_checkpoint()))
    return [r.render(s).numpy() for s in settings_list]


# ------------------------------------------------------------------------------------ open, recent, save

def test_open_with_the_system_dialog_and_recent_files(app, tiny_ckpt, tmp_path):
    s = app.settle()
    app.shot("feature_open_0_start")
    app.answer(tiny_ckpt)
    app.key("o")                                      # O: the Open dialog (zenity, answered with the checkpoint)
    s = app.wait_for(lambda s: s["model_path"] == str(tiny_ckpt), timeout=60, what="the picked checkpoint")
    s = app.settle()
    assert "--file-selection" in app.dialog_log.read_text() and "Open" in app.dialog_log.read_text()
    app.shot("feature_open_1_picked_checkpoint")
    assert s["recent"][0] == {"path": str(Path(tiny_ckpt).resolve()), "kind": "model"}
    # the embedded model again, then the checkpoint back from the Recent menu, by mouse
    app.click("open")       # a second Open, cancelled (no answer queued): nothing changes
    time.sleep(0.5)
    assert app.state()["model_path"] == str(tiny_ckpt)
    app.call("action", name="load_default")
    app.wait_for(lambda s: s["model_path"] == str(default_checkpoint().resolve()), what="the embedded model")
    app.settle()
    app.click("recent")
    app.wait_for(lambda s: "recent_0" in s["widgets"], what="the Recent menu")
    items = app.state()["recent"]
    pick = next(i for i, it in enumerate(items) if it["path"] == str(Path(tiny_ckpt).resolve()))
    app.shot("feature_open_2_recent_menu")
    app.click(f"recent_{pick}")
    app.wait_for(lambda s: s["model_path"] == str(Path(tiny_ckpt).resolve()), what="the recent checkpoint")
    app.settle()
    app.shot("feature_open_3_from_recent")
    app.call("action", name="load_default")
    app.wait_for(lambda s: s["model_path"] == str(default_checkpoint().resolve()), what="the embedded model")
    app.settle()


# ------------------------------------------------------------------------------------ blend and walk

def test_blend_two_seeds_and_export_the_walk(app, tmp_path):
    from pv3d_viewer import state as S

    app.call("action", name="reset_view")
    app.call("settings", export_folder=str(tmp_path), export_resolution=128, walk_frames=5, export_fps=10.0,
             walk_appearance=True, walk_motion=False)
    app.set(seed=1, seed_b=5, blend=0.0, t=0.5)
    app.tab("Blend")
    a = frame(app)
    app.shot("feature_blend_0_seed1")
    shots = {}
    for v in (0.5, 1.0):
        s = app.set(blend=v)
        assert s["shown"]["seed_b"] == 5 and s["shown"]["blend"] == v
        shots[v] = frame(app)
        app.shot(f"feature_blend_{int(v * 100)}pct")
    st = S.ViewerState(**app.state()["state"])
    ref = reference([S.render_settings(st.copy(blend=0.0)), S.render_settings(st.copy(blend=1.0)),
                     S.render_settings(st.copy(blend=0.0, seed=5))])
    assert psnr(a, ref[0]) > 40 and psnr(shots[1.0], ref[1]) > 40 and psnr(shots[1.0], ref[2]) > 35
    assert np.abs(shots[0.5] - a).mean() > 2 and np.abs(shots[0.5] - shots[1.0]).mean() > 2
    # the walk, with the button
    app.click("export_walk")
    job = app.wait_job(name="walk")
    assert job["error"] is None, job
    out = Path(job["result"])
    assert out.parent == tmp_path and out.name.startswith("pv3d_seed1_motion0_walk-to5")
    frames = iio.imread(out)
    assert frames.shape == (5, 128, 128, 3)
    walk = [S.render_settings(st.copy(blend=b)).with_(resolution=128) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for i, (f, r) in enumerate(zip(frames, reference(walk))):
        assert psnr(f, r) > 30, f"walk frame {i}"
    app.set(blend=0.0)


# ------------------------------------------------------------------------------------ camera paths

def test_keyframed_camera_path_preview_save_and_the_same_frames_from_the_cli(app, tmp_path):
    from pv3d_core.cli import main as cli

    app.tab("Path")
    app.call("action", name="clear_keyframes")
    for yaw, pitch, fov in ((-25.0, 0.0, 18.8), (0.0, 10.0, 13.0), (25.0, -5.0, 18.8)):
        app.set(yaw=yaw, pitch=pitch, fov=fov, t=0.4)
        app.key("k")                                   # K: the current view becomes a keyframe
        app.wait_for(lambda s, y=yaw: s["keyframes"] and s["keyframes"][-1]["yaw"] == y, what="a keyframe")
    s = app.state()
    assert [(k["time"], k["yaw"], k["pitch"]) for k in s["keyframes"]] == [(0.0, -25.0, 0.0), (1.0, 0.0, 10.0),
                                                                         (2.0, 25.0, -5.0)]
    app.shot("feature_path_0_keyframes")
    # preview: the camera moves along the curve on its own
    app.click("preview_path")
    yaws = []
    for i in range(4):
        time.sleep(0.45)
        yaws.append(app.state()["state"]["yaw"])
        app.shot(f"feature_path_1_preview_{i}")
    assert app.state()["path_previewing"] and len(set(round(y, 1) for y in yaws)) >= 3, yaws
    app.click("preview_path")
    app.wait_for(lambda s: not s["path_previewing"], what="the preview to stop")
    # save it with the dialog
    saved = tmp_path / "orbit_path.json"
    app.answer(saved)
    app.click("save_path")
    app.wait_for(lambda s: s["path_file"] == str(saved), what="the saved path")
    data = json.loads(saved.read_text())
    assert data["format"] == "pv3d-camera-path" and len(data["keyframes"]) == 3 and data["fps"] == 25.0
    # the viewer's path video ...
    app.call("settings", export_folder=str(tmp_path), export_resolution=64)
    app.set(seed=2, t=0.4)
    app.click("export_path")
    job = app.wait_job(name="path video")
    assert job["error"] is None, job
    video = iio.imread(job["result"])
    assert video.shape == (51, 64, 64, 3)              # 2 s at 25 fps, the last keyframe included
    # ... and the command line's frames of the same file
    out = tmp_path / "cli_frames"
    assert cli(["generate", "--camera-path", str(saved), "--seeds", "2", "--t0", "0.4", "--t1", "0.4",
                "--resolution", "64", "-o", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(video)
    worst = min(psnr(v, iio.imread(p)) for v, p in zip(video, pngs))
    assert worst > 30, f"viewer and CLI frames differ: {worst:.1f} dB"


# ------------------------------------------------------------------------------------ performance panel

def test_performance_panel_plots_times_and_says_what_runs(app):
    app.tab("Scene")
    app.key("p")
    s = app.wait_for(lambda s: s["perf_open"] and "perf" in s["widgets"], what="the performance panel")
    # make it draw: orbit for a second
    for i in range(10):
        app.call("set", yaw=float(-20 + 4 * i))
        time.sleep(0.1)
    s = app.settle()
    img, _ = app.shot("feature_perf_panel")
    x, y, w, h = s["widgets"]["perf"]
    panel = img[y:y + h, x:x + w].reshape(-1, 3)
    colours = {tuple(c) for c in (panel // 32)}
    assert len(colours) > 12, "the plot shows no lines"
    assert s["kernels"] in s["status_line"] and s["kernel_path"]["path"] in ("cpu-kernels", "pytorch", "kernels")
    app.key("p")
    app.wait_for(lambda s: not s["perf_open"], what="the panel to close")
    app.call("ui", perf_open=True)                   # left open: the restart test checks it is remembered


# ------------------------------------------------------------------------------------ meshes

def _glb(path):
    data = Path(path).read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + n])


def test_mesh_export_settings_formats_and_a_sequence(app, tmp_path):
    app.call("action", name="reset_view")
    app.set(seed=1, t=0.5, motion_seed=2)
    app.tab("Export")
    app.call("settings", export_folder=str(tmp_path), mesh_resolution=64, mesh_level=10.0, mesh_frames=3)
    app.shot("feature_mesh_0_settings")
    sizes = {}
    for fmt in ("glb", "obj", "ply"):
        app.call("settings", mesh_format=fmt)
        app.click("export_mesh")
        job = app.wait_job(name=fmt.upper())
        assert job["error"] is None, job
        p = Path(job["result"])
        assert p.suffix == f".{fmt}" and p.name.startswith("pv3d_seed1_motion2_t0.50")
        sizes[fmt] = p.stat().st_size
        if fmt == "glb":
            attrs = _glb(p)["meshes"][0]["primitives"][0]["attributes"]
            assert {"POSITION", "NORMAL", "COLOR_0"} <= set(attrs)
        elif fmt == "obj":
            v = [ln for ln in p.read_text().splitlines() if ln.startswith("v ")]
            assert len(v) > 500 and all(len(ln.split()) == 7 for ln in v[:20])
    app.shot("feature_mesh_1_saved")
    # the same moment from the command line's mesh code
    import trimesh
    a = trimesh.load(next(tmp_path.glob("*.ply")))
    from pv3d_core.io import load_generator
    from pv3d_core.mesh import extract_mesh
    from pv3d_core.pipeline import FrameRenderer, RenderSettings
    G = load_generator(default_checkpoint())
    r = FrameRenderer(G)
    s = RenderSettings(seed=1, motion_seed=2, t=0.5)
    m = extract_mesh(G, r.appearance(s), r.motion(s), 0.5, resolution=64)
    assert len(a.faces) == len(m.faces)
    # a sequence over the timeline
    app.click("export_mesh_sequence")
    job = app.wait_job(name="mesh sequence", timeout=300)
    assert job["error"] is None, job
    folder = Path(job["result"])
    index = json.loads((folder / "index.json").read_text())
    assert [f["t"] for f in index["frames"]] == [0.0, 0.5, 1.0] and index["mesh_format"] == "ply"
    assert all((folder / f["file"]).stat().st_size > 1000 for f in index["frames"])
    assert index["frames"][1]["time_s"] == pytest.approx(1.0)       # 3 frames over a 2 s clip
    app.call("settings", mesh_format="obj")


# ------------------------------------------------------------------------------------ layout and settings

def test_layout_and_settings_are_remembered(app, xvfb, home, tiny_ckpt):
    app.call("set", playback_mode="every frame")
    app.tab("Export")
    s = app.state()
    assert s["perf_open"] and s["settings"]["mesh_format"] == "obj"
    assert app.quit() == 0
    cfg = json.loads((home / "cfg" / "viewer.json").read_text())
    assert cfg["panel_tab"] == "Export" and cfg["show_performance"] is True
    assert cfg["playback_mode"] == "every frame" and cfg["mesh_format"] == "obj" and cfg["mesh_frames"] == 3
    b = DialogApp(xvfb, home)
    try:
        s = b.settle()
        assert s["tab"] == "Export" and s["perf_open"] and s["state"]["playback_mode"] == "every frame"
        assert s["settings"]["mesh_format"] == "obj" and s["settings"]["mesh_resolution"] == 64
        assert any(it["path"] == str(Path(tiny_ckpt).resolve()) for it in s["recent"])
        assert any(it["kind"] == "path" for it in s["recent"])
        b.shot("feature_layout_restored")
    finally:
        assert b.quit() == 0

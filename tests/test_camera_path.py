"""Keyframed camera paths: the spline, the JSON file, and `pv3d generate --camera-path` / blends / walks."""
import json

import imageio.v2 as imageio
import numpy as np
import pytest

from pv3d_core.cli import main as cli
from pv3d_core.export import path_settings, walk_settings
from pv3d_core.pipeline import FrameRenderer, RenderSettings
from pv3d_core.render.camera_path import CameraPath, CameraPathError, Keyframe, hermite


def path3(loop=False):
    p = CameraPath(fps=10.0, loop=loop)
    p.add(-20, 0, 18.8)
    p.add(0, 10, 14.0, spacing=1.0)
    p.add(25, -5, 18.8, spacing=2.0)
    return p


def test_the_spline_passes_through_every_keyframe_smoothly():
    p = path3()
    v = p.sample([k.time for k in p.keyframes])
    np.testing.assert_allclose(v, [[k.yaw, k.pitch, k.fov] for k in p.keyframes], atol=1e-9)
    # C1: the slope just before a keyframe equals the slope just after it
    e = 1e-5
    for k in p.keyframes[1:-1]:
        left = (p.sample([k.time])[0] - p.sample([k.time - e])[0]) / e
        right = (p.sample([k.time + e])[0] - p.sample([k.time])[0]) / e
        np.testing.assert_allclose(left, right, rtol=1e-3, atol=1e-2)
    # between keyframes it moves (no overshoot for a monotone pair here)
    mid = p.sample([0.5])[0]
    assert -20 < mid[0] < 0 and 14.0 < mid[2] < 18.8
    assert p.frame_count() == 31 and len(p.angles()) == 31          # 0..3 s at 10 fps, end included
    np.testing.assert_allclose(p.angles()[-1], [25, -5, 18.8])
    # one keyframe holds still; two move in a straight line
    one = CameraPath([Keyframe(0, 5, 1, 18)])
    assert np.allclose(one.sample([0, 3]), [[5, 1, 18]] * 2) and one.frame_count() == 1
    two = CameraPath([Keyframe(0, 0, 0, 18), Keyframe(2, 10, 4, 12)])
    np.testing.assert_allclose(two.sample([1.0])[0], [5, 2, 15])


def test_a_looped_path_comes_back_smoothly():
    p = path3(loop=True)
    d = p.total_duration()
    assert d == pytest.approx(4.5)                      # 3 s of keyframes + one mean spacing back
    assert p.frame_count() == 45
    np.testing.assert_allclose(p.sample([d])[0], p.sample([0.0])[0], atol=1e-9)
    e = 1e-5
    before = (p.sample([d])[0] - p.sample([d - e])[0]) / e
    after = (p.sample([e])[0] - p.sample([0.0])[0]) / e
    np.testing.assert_allclose(before, after, rtol=1e-3, atol=1e-2)


def test_hermite_reproduces_a_line_and_clamps_outside():
    knots = np.array([0.0, 0.5, 2.0, 3.0])
    vals = np.c_[2 * knots + 1]
    np.testing.assert_allclose(hermite(knots, vals, np.array([0.25, 1.0, 2.7])), [[1.5], [3.0], [6.4]])
    np.testing.assert_allclose(hermite(knots, vals, np.array([-1.0, 9.0])), [[1.0], [7.0]])


def test_json_roundtrip_and_bad_files(tmp_path):
    p = path3(loop=True)
    f = p.save(tmp_path / "p.json")
    q = CameraPath.load(f)
    assert q.keyframes == p.keyframes and q.fps == p.fps and q.loop and q.total_duration() == p.total_duration()
    np.testing.assert_allclose(q.angles(), p.angles())
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert CameraPath.load(tmp_path / "bom.json").keyframes == p.keyframes
    good = json.loads(f.read_text())
    bad = {
        "notjson": "{", "list": [], "format": {**good, "format": "x"}, "version": {**good, "version": 9},
        "times": {**good, "keyframes": [good["keyframes"][1], good["keyframes"][0]]},
        "fov": {**good, "keyframes": [{**good["keyframes"][0], "fov": 500}]},
        "bool": {**good, "keyframes": [{**good["keyframes"][0], "yaw": True}]},
        "extra": {**good, "keyframes": [{**good["keyframes"][0], "roll": 3}]},
        "nan": {**good, "keyframes": [{**good["keyframes"][0], "yaw": float("nan")}]},
        "fps": {**good, "fps": 0}, "duration": {**good, "duration": 1.0},
        "empty": {**good, "keyframes": []},
        "deep": "[" * 100000 + "]" * 100000,
    }
    for name, content in bad.items():
        g = tmp_path / f"{name}.json"
        g.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(CameraPathError):
            CameraPath.load(g)
    with pytest.raises(CameraPathError, match="cannot read"):
        CameraPath.load(tmp_path / "missing.json")


def test_generate_renders_the_camera_path(tiny_ckpt, tiny_generator, tmp_path):
    p = path3()
    p.fps = 2.0                                          # 0..3 s at 2 fps: 7 frames
    f = p.save(tmp_path / "path.json")
    out = tmp_path / "frames"
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--seeds", "3", "--camera-path", str(f), "--t0", "0.2",
                "--t1", "0.8", "--resolution", "32", "-o", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == p.frame_count() == 7
    r = FrameRenderer(tiny_generator)
    todo = path_settings(RenderSettings(seed=3, resolution=32), p, 0.2, 0.8)
    assert todo[0].fov == pytest.approx(18.8) and todo[3].t == pytest.approx(0.5)
    for png, s in zip(pngs, todo):
        assert np.abs(imageio.imread(png).astype(float) - r.render(s).numpy()).max() <= 1
    # the path's fps is the video's unless --fps says otherwise
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--camera-path", str(f), "--frames", "3", "--resolution", "32",
                "-o", str(tmp_path / "c.mp4")]) == 0
    assert len(imageio.mimread(tmp_path / "c.mp4")) == 3
    (tmp_path / "bad.json").write_text("{}")
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--camera-path", str(tmp_path / "bad.json"),
                "-o", str(tmp_path / "d.mp4")]) == 2


def test_generate_blends_and_walks(tiny_ckpt, tiny_generator, tmp_path):
    r = FrameRenderer(tiny_generator)
    out = tmp_path / "walk"
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--seeds", "1", "--blend-seed", "5", "--walk", "--frames", "4",
                "--t0", "0.5", "--resolution", "32", "-o", str(out)]) == 0
    pngs = [imageio.imread(p).astype(float) for p in sorted(out.glob("*.png"))]
    a = r.render(RenderSettings(seed=1, t=0.5, resolution=32)).numpy()
    b = r.render(RenderSettings(seed=5, t=0.5, resolution=32)).numpy()
    assert len(pngs) == 4 and np.abs(pngs[0] - a).max() <= 1 and np.abs(pngs[-1] - b).max() <= 1
    mid = r.render(RenderSettings(seed=1, seed_b=5, blend=1 / 3, t=0.5, resolution=32)).numpy()
    assert np.abs(pngs[1] - mid).max() <= 1 and np.abs(pngs[1] - a).mean() > 0.5
    # a fixed blend of the motion, and the errors
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--motion-blend-seed", "4", "--motion-blend", "0.5",
                "--frames", "2", "--resolution", "32", "-o", str(tmp_path / "m")]) == 0
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--walk", "-o", str(tmp_path / "w.mp4")]) == 2
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--blend-seed", "2", "--blend", "2",
                "-o", str(tmp_path / "w.mp4")]) == 2


def test_walk_and_slerp():
    import torch

    from pv3d_core.pipeline import slerp

    base = RenderSettings(seed=1, seed_b=2, motion_seed=3)
    w = walk_settings(base, 3)
    assert [s.blend for s in w] == [0.0, 0.5, 1.0] and all(s.motion_blend == 0 for s in w)
    a, b = torch.randn(1, 64), torch.randn(1, 64)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    m = slerp(a, b, 0.5)
    assert m.norm() == pytest.approx(float((a.norm() + b.norm()) / 2), rel=1e-5)   # no shrinking halfway

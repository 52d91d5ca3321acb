"""Viewer logic without a window: UI state -> render settings, timeline, camera, settings store, drops."""
import json
import math

import pytest

from pv3d_viewer import drop as D
from pv3d_viewer import settings_store as SS
from pv3d_viewer import state as S


def test_default_state_maps_to_default_render_settings():
    from pv3d_core.pipeline import RenderSettings

    s = S.render_settings(S.ViewerState())
    d = RenderSettings()
    assert (s.seed, s.motion_seed, s.t, s.yaw, s.pitch, s.psi, s.view) == (0, 0, 0.0, 0.0, 0.0, 0.7, "final")
    assert s.radius == pytest.approx(d.radius) and s.fov == pytest.approx(d.fov)
    assert s.neural_resolution is None and s.use_cache and s.resolution == 128


def test_every_field_reaches_the_render_settings():
    st = S.ViewerState(seed=5, motion_seed=9, t=0.25, psi=0.5, yaw=30, pitch=-10, fov=15,
                       resolution=256, view="depth", use_cache=False)
    s = S.render_settings(st)
    assert (s.seed, s.motion_seed, s.t, s.psi, s.fov, s.resolution, s.view, s.use_cache) == \
        (5, 9, 0.25, 0.5, 15, 256, "depth", False)
    assert s.yaw == pytest.approx(math.radians(30)) and s.pitch == pytest.approx(math.radians(-10))


def test_preview_is_the_cheap_raw_render_and_hashable_for_the_cache():
    st = S.ViewerState(view="final")
    p = S.render_settings(st, preview=True)
    assert p.view == "raw" and p.neural_resolution == S.PREVIEW_NEURAL_RES and p.resolution == st.resolution
    assert S.render_settings(st.copy(view="normals"), preview=True).view == "normals"
    assert hash(p) != hash(S.render_settings(st))
    assert S.render_settings(st) == S.render_settings(st.copy())


def test_bad_view_mode_is_rejected():
    with pytest.raises(ValueError, match="view mode"):
        S.render_settings(S.ViewerState(view="wireframe"))


def test_long_clip_chains_motion_seeds_through_t0_without_jumps():
    assert S.long_clip_position(0.0, 3, 10) == (10, 0.0)
    assert S.long_clip_position(0.5, 3, 10) == (10, 1.0)
    seed, t = S.long_clip_position(1.0, 3, 10)
    assert seed == 11 and t == pytest.approx(0.0)
    assert S.long_clip_position(3.0, 3, 10) == (12, 0.0)
    # t is continuous along the whole chain, and every seed change happens at t = 0
    prev_seed, prev_t = 10, 0.0
    for i in range(1, 3001):
        seed, t = S.long_clip_position(i / 1000, 3, 10)
        assert abs(t - prev_t) < 0.0021
        if seed != prev_seed:
            assert prev_t < 0.003 and t < 0.003
        prev_seed, prev_t = seed, t
    st = S.ViewerState(long_clip=True, long_clip_segments=3, motion_seed=10, phase=1.25)
    s = S.render_settings(st)
    assert s.motion_seed == 11 and s.t == pytest.approx(0.5)


def test_advance_wraps_and_ping_pongs():
    st = S.ViewerState(playing=True, t=0.9, clip_seconds=1.0, speed=1.0)
    S.advance(st, 0.2)
    assert st.t == pytest.approx(0.1)
    st = S.ViewerState(playing=True, t=0.9, clip_seconds=1.0, loop="ping-pong")
    S.advance(st, 0.2)
    assert st.t == pytest.approx(0.9) and st.direction == -1
    S.advance(st, 1.0)
    assert st.t == pytest.approx(0.1) and st.direction == 1
    paused = S.ViewerState(playing=False, t=0.3)
    S.advance(paused, 1.0)
    assert paused.t == 0.3
    fast = S.ViewerState(playing=True, speed=2.0, clip_seconds=2.0)
    S.advance(fast, 0.25)
    assert fast.t == pytest.approx(0.25)


def test_playback_frames_walk_the_grid():
    st = S.ViewerState(t=0.0, frames_per_clip=4)
    assert S.playback_frames(st, 6) == [0.25, 0.5, 0.75, 0.0, 0.25, 0.5]
    st = S.ViewerState(t=0.5, frames_per_clip=4, loop="ping-pong")
    assert S.playback_frames(st, 5) == [0.75, 1.0, 0.75, 0.5, 0.25]
    settings = S.playback_settings(S.ViewerState(frames_per_clip=4), 3)
    assert [s.t for s in settings] == [0.25, 0.5, 0.75]
    assert S.quantise(0.37, 1.0, 4) == 0.25
    assert S.playhead(S.ViewerState(t=0.95, frames_per_clip=4)) == 0.0          # wrap: the end is the start
    assert S.playhead(S.ViewerState(t=0.95, frames_per_clip=4, loop="ping-pong")) == 1.0
    long = S.ViewerState(long_clip=True, long_clip_segments=2, phase=1.3, frames_per_clip=4)
    assert S.playhead(long) == 1.25


def test_drag_orbits_and_wheel_zooms_within_limits():
    st = S.ViewerState()
    S.apply_drag(st, 100, -50)
    assert st.yaw == pytest.approx(30) and st.pitch == pytest.approx(-15)
    S.apply_drag(st, 10_000, 10_000)
    assert st.yaw == S.YAW_LIMIT and st.pitch == S.PITCH_LIMIT
    f0 = st.fov
    S.apply_wheel(st, 2)                  # zoom is by field of view: the camera never moves
    assert st.fov < f0 and S.render_settings(st).radius == S.render_settings(S.ViewerState()).radius
    S.apply_wheel(st, -1000)
    assert st.fov == S.FOV_RANGE[1]
    S.apply_wheel(st, 1000)
    assert st.fov == S.FOV_RANGE[0]
    S.reset_view(st)
    assert (st.yaw, st.pitch, st.fov) == (0.0, 0.0, S.DEFAULT_FOV)


def test_out_of_the_training_range():
    assert S.out_of_range(S.ViewerState(yaw=35.0, pitch=-20.0)) == []
    assert S.out_of_range(S.ViewerState(yaw=-36.0, pitch=21.0)) == ["yaw", "pitch"]


def test_blend_reaches_the_render_settings_only_when_used():
    s = S.render_settings(S.ViewerState(seed=2, seed_b=9, blend=0.0, motion_seed_b=4, motion_blend=0.25))
    assert s.seed_b is None and s.blend == 0.0 and s.motion_seed_b == 4 and s.motion_blend == 0.25
    assert S.render_settings(S.ViewerState(seed_b=9, blend=0.5)).seed_b == 9


# ------------------------------------------------------------------------------- settings store

def test_settings_roundtrip_in_the_env_location(tmp_path, monkeypatch):
    monkeypatch.setenv("PV3D_VIEWER_CONFIG", str(tmp_path / "cfg"))
    assert SS.config_path() == tmp_path / "cfg" / "viewer.json"
    s, warn = SS.load()
    assert warn is None and s.last_checkpoint is None
    s.last_checkpoint, s.window_width, s.export_folder = "/m/model.safetensors", 1500, "/exports"
    SS.save(s)
    s2, warn = SS.load()
    assert warn is None and (s2.last_checkpoint, s2.window_width, s2.export_folder) == \
        ("/m/model.safetensors", 1500, "/exports")
    assert not [p for p in (tmp_path / "cfg").iterdir() if p.name != "viewer.json"], "temporary file left behind"
    monkeypatch.setenv("PV3D_VIEWER_CONFIG", str(tmp_path / "x.json"))
    assert SS.config_path() == tmp_path / "x.json"


def test_default_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("PV3D_VIEWER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert SS.config_path() == tmp_path / "pv3d-studio" / "viewer.json"


def test_corrupt_or_wrongly_typed_settings_fall_back_to_defaults(tmp_path):
    p = tmp_path / "viewer.json"
    p.write_text("{not json")
    s, warn = SS.load(p)
    assert "ignored" in warn and s == SS.ViewerSettings()
    p.write_text(json.dumps({"window_width": "wide", "window_height": 100000, "export_fps": -3,
                             "last_checkpoint": 7, "unknown": 1, "export_frames": 30, "export_camera": "spiral"}))
    s, warn = SS.load(p)
    d = SS.ViewerSettings()
    for name in ("window_width", "window_height", "export_fps", "last_checkpoint", "export_camera"):
        assert name in warn, warn               # each value reset to its default is named in the note
    assert s.window_width == d.window_width and s.window_height == d.window_height and s.export_fps == d.export_fps
    assert s.last_checkpoint is None and s.export_frames == 30 and s.export_camera == d.export_camera
    assert s.unknown_keys == {"unknown": 1}


def test_save_failure_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "viewer.json"
    SS.save(SS.ViewerSettings(window_width=1000), p)

    import pv3d_core.files as F

    def disk_full(*a, **k):          # fails after the temporary file is written, before the rename
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(F.os, "chmod", disk_full)
    from pv3d_core.errors import ExportError

    with pytest.raises(ExportError, match="No space left"):
        SS.save(SS.ViewerSettings(window_width=2000), p)
    monkeypatch.undo()
    assert SS.load(p)[0].window_width == 1000
    assert [x.name for x in tmp_path.iterdir()] == ["viewer.json"]


# ------------------------------------------------------------------------------- drops

def test_drop_classification(tmp_path):
    ck = tmp_path / "m.safetensors"
    ck.write_bytes(b"x")
    img = tmp_path / "face.JPG"
    img.write_bytes(b"x")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert D.classify(ck)[0] == "checkpoint"
    assert D.classify(tmp_path / "official.ckpt")[0] == "reject"   # missing
    assert D.classify(img)[0] == "image"
    kind, why = D.classify(txt)
    assert kind == "reject" and "notes.txt" in why and "checkpoint" in why
    assert D.classify(tmp_path)[0] == "reject"

"""Synthetic talking heads: deterministic, ground truth consistent with the cameras, faces that move."""
import json

import numpy as np
import pytest
import torch

from pv3d_core.data import layout, synth
from pv3d_core.errors import ExportError
from pv3d_core.render import cameras
from pv3d_core.render.rays import pixel_rays, split_camera


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = synth.synthesize_dataset(root, n_clips=2, n_frames=3, res=48, seed=7, workers=1, progress=False)
    return root, summary


def test_layout_and_determinism(small_set, tmp_path):
    root, summary = small_set
    assert summary["clips"] == 2 and summary["rendered_now"] == 2
    names = layout.list_clips(root)
    assert names == ["synth_00000", "synth_00001"]
    v = layout.read_video(root / layout.VIDEO_DIR / "synth_00001.mp4")
    assert v.shape == (3, 48, 48, 3)
    cams = layout.read_cameras(root / layout.CAMERA_DIR / "synth_00001.json")
    assert cams.shape == (3, 25)
    # same seed -> identical clip (rendered fresh in another folder)
    again = synth.synthesize_dataset(tmp_path, n_clips=2, n_frames=3, res=48, seed=7, workers=1, progress=False,
                                     meshes=False)
    assert again["rendered_now"] == 2
    a = np.load(root / "groundtruth" / "synth_00001.npz")["depth"]
    b = np.load(tmp_path / "groundtruth" / "synth_00001.npz")["depth"]
    assert np.array_equal(a, b)
    # a second call on a complete folder renders nothing (resume)
    assert synth.synthesize_dataset(root, n_clips=2, n_frames=3, res=48, seed=7, workers=1,
                                    progress=False)["rendered_now"] == 0
    assert json.loads((root / "groundtruth" / "depth.json").read_text())["kind"] == "distance"


def test_depth_lies_on_the_surface(small_set):
    root, _ = small_set
    gt = synth.load_groundtruth(root, "synth_00000")
    cams = layout.read_cameras(root / layout.CAMERA_DIR / "synth_00000.json")
    f = 2
    depth, mask = gt["depth"][f], gt["mask"][f]
    cw, intr = split_camera(torch.from_numpy(cams[f:f + 1]))
    o, d = pixel_rays(cw, intr, depth.shape[0])
    sel = (mask.reshape(-1) == 1.0)
    assert sel.sum() > 0.2 * sel.size            # the head fills a good part of the frame
    pts = (o[0] + d[0] * torch.from_numpy(depth.reshape(-1, 1))).numpy()[sel]
    sdf = synth.head_sdf(pts, gt["identity"], gt["expressions"][f])
    # supersampled pixels average 4 hits, so allow for the surface's curvature within a pixel
    assert np.median(np.abs(sdf)) < 2e-3 and np.percentile(np.abs(sdf), 95) < 1.5e-2
    assert np.all(depth[mask == 0] == 0)


def test_faces_blink_and_talk():
    rng = synth.clip_rng(0, 3)
    ident = synth.Identity.sample(rng)
    c = cameras.frontal()
    open_ = synth.render_head(ident, synth.Expression(), c, 96)["image"].astype(float)
    closed = synth.render_head(ident, synth.Expression(blink=1.0), c, 96)["image"].astype(float)
    talking = synth.render_head(ident, synth.Expression(mouth=1.0), c, 96)["image"].astype(float)
    diff_eyes = np.abs(open_ - closed).sum(-1)
    diff_mouth = np.abs(open_ - talking).sum(-1)
    ys, xs = np.nonzero(diff_eyes > 30)
    assert len(ys) > 10 and ys.mean() < 48            # the blink changes the upper half (eyes)
    ys, xs = np.nonzero(diff_mouth > 30)
    assert len(ys) > 10 and ys.mean() > 48            # the mouth changes the lower half
    # expression tracks: blinks happen and the mouth moves within a 32-frame clip
    tr = synth.expression_track(np.random.default_rng(1), 64)
    assert max(e.blink for e in tr) == 1.0 and np.std([e.mouth for e in tr]) > 0.05


def test_camera_tracks_are_near_frontal():
    for s in range(20):
        cams = synth.camera_track(np.random.default_rng(s), 32)
        for c in cams[::8]:
            yaw, pitch, radius = cameras.yaw_pitch_of(c)
            assert abs(yaw) <= np.radians(35) + 1e-4 and abs(pitch) <= np.radians(20) + 1e-4
            assert np.isclose(radius, cameras.DEFAULT_RADIUS, atol=1e-3)


def test_unwritable_output_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExportError, match="cannot (write|create folder)"):
        synth.synthesize_dataset(f / "sub", 1, 2, 32, workers=1, progress=False)

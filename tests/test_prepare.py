"""`pv3d data prepare` on a short video made from scikit-image's astronaut (never downloads)."""
import json

import numpy as np
import pytest

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from pv3d_core.data import layout
from pv3d_core.data.layout import DatasetError
from pv3d_core.data.prepare import prepare_videos


def _video(tmp_path, name="talk.mp4", blank=(4, 5), n=10):
    """Astronaut frames drifting and zooming a little, with blank frames at ``blank``."""
    from PIL import Image

    src = Image.fromarray(skdata.astronaut())
    frames = []
    for i in range(n):
        if i in blank:
            frames.append(np.full((256, 256, 3), 120, np.uint8))
            continue
        s = 1.0 + 0.02 * i
        crop = src.crop((int(20 + 3 * i), int(10 + 2 * i), int(20 + 3 * i + 420 / s), int(10 + 2 * i + 420 / s)))
        frames.append(np.asarray(crop.resize((256, 256), Image.BILINEAR)))
    path = tmp_path / name
    layout.write_video(path, frames, fps=10)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    vid = _video(tmp)
    out = tmp / "ds"
    return out, prepare_videos([vid], out, resolution=64, progress=False)


def test_prepare_writes_the_official_layout(prepared):
    out, s = prepared
    assert s["frames_total"] == 10 and s["frames_without_face"] == 2
    # the blank frames split the video into two continuous clips
    assert s["clips_written"] == 2 and s["frames_kept"] == 8
    names = layout.list_clips(out)
    assert names == s["clips"]
    for n in names:
        frames = layout.read_video(out / layout.VIDEO_DIR / f"{n}.mp4")
        cams = layout.read_cameras(out / layout.CAMERA_DIR / f"{n}.json")
        assert frames.shape[1:] == (64, 64, 3) and len(frames) == len(cams) == 4
    assert json.loads((out / "summary.json").read_text())["clips_written"] == 2
    # the training loader reads it
    from pv3d_core.data.dataset import ClipDataset

    ds = ClipDataset(out, 64)
    assert len(ds) == 2


def test_prepared_cameras_are_frontal_and_smooth(prepared):
    from pv3d_core.render import cameras

    out, s = prepared
    for n in s["clips"]:
        cams = layout.read_cameras(out / layout.CAMERA_DIR / f"{n}.json")
        ang = np.array([cameras.yaw_pitch_of(c)[:2] for c in cams])
        # pitch: about 15° (see test_faces.test_frontal_photo_gives_a_near_frontal_camera)
        assert np.abs(np.degrees(ang[:, 0])).max() < 8 and np.abs(np.degrees(ang[:, 1])).max() < 20
        assert np.abs(np.diff(np.degrees(ang), axis=0)).max() < 3
        m = cams[:, :16].reshape(-1, 4, 4)
        assert np.allclose(np.linalg.norm(m[:, :3, 3] - np.array(cameras.DEFAULT_PIVOT), axis=1), 2.7, atol=1e-4)


def test_the_crops_follow_the_face(prepared):
    """The face drifts across the source frames; in the crops it stays put."""
    from pv3d_core.faces import find_face

    out, s = prepared
    frames = layout.read_video(out / layout.VIDEO_DIR / f"{s['clips'][0]}.mp4")
    from PIL import Image

    eyes = []
    for f in frames:
        big = np.asarray(Image.fromarray(f).resize((256, 256), Image.BICUBIC))
        lm = find_face(big).landmarks / 256
        eyes.append(lm[36:48].mean(0))
    eyes = np.array(eyes)
    assert np.abs(eyes - eyes.mean(0)).max() < 0.02
    assert abs(eyes[:, 0].mean() - 0.5) < 0.03


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(DatasetError, match="broken.mp4"):
        prepare_videos([bad], tmp_path / "ds", resolution=64, progress=False)
    with pytest.raises(DatasetError, match="not found"):
        prepare_videos([tmp_path / "nope.mp4"], tmp_path / "ds", resolution=64, progress=False)
    assert not (tmp_path / "ds" / layout.LIST_FILE).exists()


def test_video_without_faces(tmp_path):
    path = tmp_path / "grey.mp4"
    layout.write_video(path, [np.full((128, 128, 3), 90 + i, np.uint8) for i in range(3)], fps=10)
    with pytest.raises(DatasetError, match="no face"):
        prepare_videos([path], tmp_path / "ds", resolution=64, progress=False)


def test_cli_prepare(tmp_path, capsys):
    from pv3d_core.cli import main

    vid = _video(tmp_path, "a.mp4", blank=(), n=3)
    rc = main(["data", "prepare", str(vid), "-o", str(tmp_path / "ds"), "--res", "64"])
    assert rc == 0
    assert layout.list_clips(tmp_path / "ds") == ["a"]
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    assert main(["data", "prepare", str(bad), "-o", str(tmp_path / "ds2")]) == 2
    assert "bad.mp4" in capsys.readouterr().err

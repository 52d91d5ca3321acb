import imageio.v2 as imageio
import numpy as np

from pv3d_core.cli import main as cli
from pv3d_core.io import load_generator
from pv3d_core.pipeline import FrameRenderer, RenderSettings


def test_generate_mp4_frames_match_the_renderer(tmp_path, tiny_ckpt):
    out = tmp_path / "clip.mp4"
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--seeds", "4", "--motion-seed", "2", "--frames", "5",
                "--camera", "yaw", "--psi", "0.7", "-o", str(out)]) == 0
    frames = imageio.mimread(out)
    assert len(frames) == 5 and frames[0].shape == (128, 128, 3)
    r = FrameRenderer(load_generator(tiny_ckpt))
    import math

    for i, t in enumerate(np.linspace(0, 1, 5)):
        yaw = math.radians(20) * math.sin(2 * math.pi * i / 5)
        ref = r.render(RenderSettings(seed=4, motion_seed=2, t=float(t), yaw=yaw, psi=0.7)).numpy()
        err = np.abs(frames[i].astype(float) - ref).mean()
        assert err < 6, f"frame {i}: mean abs error {err:.1f} (h264 at quality 8)"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generate_png_folder_and_several_seeds(tmp_path, tiny_ckpt):
    out = tmp_path / "frames_{seed}"
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--seeds", "1-2", "--frames", "3", "--resolution", "64",
                "-o", str(out)]) == 0
    for s in (1, 2):
        files = sorted((tmp_path / f"frames_{s}").glob("*.png"))
        assert len(files) == 3 and imageio.imread(files[0]).shape == (64, 64, 3)


def test_generate_bad_arguments(tmp_path, tiny_ckpt, capsys):
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--frames", "0", "-o", str(tmp_path / "a.mp4")]) == 2
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--t1", "2", "-o", str(tmp_path / "a.mp4")]) == 2
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--frames", "2", "-o", str(tmp_path / "a.gif")]) == 2
    assert cli(["generate", "--ckpt", str(tiny_ckpt), "--frames", "2", "-o", "/proc/nope/a.mp4"]) == 2
    assert "cannot" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

"""Portrait pipelines on the tiny random model and scikit-image's astronaut: photo → portrait,
save/load, animate (API and `pv3d animate`), video reconstruction and motion editing, progress,
cancel, determinism, errors. Steps are few: these check the plumbing, not the quality."""
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from pv3d_core import portrait as P
from pv3d_core.export import Cancelled
from pv3d_core.faces import FaceError
from pv3d_core.invert import InversionConfig, psnr
from pv3d_core.render import cameras

QUICK = InversionConfig(w_steps=3, pti_steps=1, w_avg_samples=64)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def portrait(tiny_generator, photo):
    seen = []
    por = P.prepare_and_invert(photo, tiny_generator, progress=lambda *a: seen.append(a), config=QUICK)
    return por, seen


def _render_at_photo(por):
    with torch.no_grad():
        zm, t = torch.zeros(1, por.generator.motion_dim), torch.zeros(1)
        out = por.generator.synthesis(por.ws, zm, t, torch.from_numpy(np.asarray(por.camera))[None],
                                      noise_mode="const", deterministic=True)["image"]
    return out


def test_photo_becomes_a_portrait(tiny_generator, portrait):
    por, seen = portrait
    R = tiny_generator.img_resolution
    assert por.crop.shape == (R, R, 3) and por.ws.shape == (1, tiny_generator.num_ws, tiny_generator.w_dim)
    assert cameras.yaw_pitch_of(por.camera)[0] == pytest.approx(np.radians(por.transform["yaw_deg"]), abs=1e-5)
    assert abs(por.transform["yaw_deg"]) < 8
    stages = [s[0] for s in seen]
    assert stages[0] == "align" and "w" in stages and stages[-1] == "pti"
    assert [s[1] for s in seen if s[0] == "w"] == list(range(1, QUICK.w_steps + 1))
    assert np.isfinite(por.metrics["psnr"]) and 0 < por.metrics["ssim"] <= 1
    # the metric is measured against the crop at the estimated camera
    tgt = P.image_to_tensor(por.crop, R)
    assert psnr(_render_at_photo(por), tgt) == pytest.approx(por.metrics["psnr"], abs=1e-4)
    assert por.generator is not tiny_generator


def test_saved_portrait_renders_the_same_frame(tmp_path, portrait):
    por, _ = portrait
    path = por.save(tmp_path / "p.safetensors")
    back = P.load(path)
    assert np.allclose(back.camera, por.camera) and back.transform["rule"] == "ffhq"
    a = por.renderer().render(por.settings(motion_seed=3, t=0.5)).numpy()
    b = back.renderer().render(back.settings(motion_seed=3, t=0.5)).numpy()
    assert np.array_equal(a, b)


def test_animation_starts_at_the_photo_and_moves(portrait):
    por, _ = portrait
    from pv3d_core.pipeline import to_uint8

    frames = P.animate(por, None, motion_seed=3, frames=3)
    first = to_uint8(_render_at_photo(por)).numpy()
    assert np.abs(frames[0].astype(int) - first.astype(int)).max() <= 1
    assert np.abs(frames[2].astype(int) - frames[0].astype(int)).mean() > 0.5      # motion over time
    orbit = P.animate(por, None, motion_seed=3, frames=3, orbit=True)
    assert np.array_equal(orbit[0], frames[0]) and not np.array_equal(orbit[1], frames[1])
    other = P.animate(por, None, motion_seed=4, frames=3)
    assert np.array_equal(other[0], frames[0]) and not np.array_equal(other[2], frames[2])


def test_pipeline_is_deterministic_under_a_seed(tiny_generator, photo):
    cfg = InversionConfig(w_steps=2, pti_steps=0, w_avg_samples=64, seed=5)
    a = P.prepare_and_invert(photo, tiny_generator, config=cfg)
    b = P.prepare_and_invert(photo, tiny_generator, config=cfg)
    assert torch.equal(a.ws, b.ws) and np.array_equal(a.crop, b.crop) and np.array_equal(a.camera, b.camera)


def test_cancel(tiny_generator, photo):
    ev = threading.Event()

    def prog(stage, step, total, loss):
        if stage == "w" and step == 1:
            ev.set()

    with pytest.raises(Cancelled):
        P.prepare_and_invert(photo, tiny_generator, progress=prog, cancel=ev, config=QUICK)
    ev2 = threading.Event()
    ev2.set()
    with pytest.raises(Cancelled):
        P.prepare_and_invert(photo, tiny_generator, cancel=ev2, config=QUICK)


def test_photo_without_a_face(tiny_generator, tmp_path):
    with pytest.raises(FaceError, match="no face"):
        P.prepare_and_invert(skdata.coffee(), tiny_generator, config=QUICK)


def test_cli_animate_first_frame_matches_the_inversion(tmp_path, tiny_ckpt, photo, capsys):
    from pv3d_core.cli import main
    from pv3d_core.data.layout import read_video

    out = tmp_path / "out.mp4"
    saved = tmp_path / "p.safetensors"
    rc = main(["animate", str(photo), "--ckpt", str(tiny_ckpt), "--motion-seed", "3", "--frames", "4",
               "--w-steps", "2", "--pti-steps", "1", "--save-portrait", str(saved), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    video = read_video(out)
    assert video.shape[0] == 4
    por = P.load(saved)
    ref = ((_render_at_photo(por)[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).numpy()
    err = np.abs(video[0].astype(float) - ref).mean()
    assert err < 6, err                                   # h264 loses a little
    other = P.load(saved)
    other_ws = other.ws + 0.5 * torch.randn_like(other.ws)
    with torch.no_grad():
        far = other.generator.synthesis(other_ws, torch.zeros(1, other.generator.motion_dim), torch.zeros(1),
                                        torch.from_numpy(other.camera)[None])["image"]
    far = ((far[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).numpy()
    assert np.abs(video[0].astype(float) - far).mean() > err   # the check can tell frames apart
    # a saved portrait animates without inverting again, with an orbit
    out2 = tmp_path / "orbit.mp4"
    assert main(["animate", str(saved), "--frames", "3", "--orbit", "-o", str(out2)]) == 0
    v2 = read_video(out2)
    assert np.abs(v2[0].astype(float) - video[0].astype(float)).mean() < 3


def test_cli_errors(tmp_path, tiny_ckpt, capsys):
    from pv3d_core.cli import main

    txt = tmp_path / "x.jpg"
    txt.write_text("hello")
    assert main(["animate", str(txt), "--ckpt", str(tiny_ckpt), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "not an image" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "missing.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_unwritable_outputs_are_refused_before_any_fitting(tmp_path, tiny_ckpt, photo, capsys, monkeypatch):
    from pv3d_core import portrait as P
    from pv3d_core.cli import main

    def must_not_run(*a, **k):
        raise AssertionError("the inversion started before the output was checked")
    monkeypatch.setattr(P, "prepare_and_invert", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("x")                      # a file where a folder is needed
    for extra in (["-o", str(blocker / "o.mp4")], ["-o", str(tmp_path / "o.mp4"), "--save-portrait",
                                                     str(blocker / "p.safetensors")]):
        assert main(["animate", str(photo), "--ckpt", str(tiny_ckpt), *extra]) == 2
        assert "cannot create folder" in capsys.readouterr().err
    assert main(["reconstruct", str(photo), "--ckpt", str(tiny_ckpt), "-o", str(blocker / "dir")]) == 2
    assert "cannot create folder" in capsys.readouterr().err


def test_video_reconstruction_and_motion_editing(tmp_path, tiny_generator, tiny_ckpt, capsys):
    from PIL import Image

    from pv3d_core.cli import main
    from pv3d_core.data import layout

    src = Image.fromarray(skdata.astronaut())
    frames = [np.asarray(src.crop((10 + 4 * i, 10, 10 + 4 * i + 440, 450)).resize((200, 200))) for i in range(2)]
    frames.insert(1, np.full((200, 200, 3), 100, np.uint8))       # a frame without a face
    vid = tmp_path / "talk.mp4"
    layout.write_video(vid, frames, fps=10)
    out = tmp_path / "rec"
    s = P.reconstruct_video(vid, tiny_generator, out, InversionConfig(w_steps=2, pti_steps=1, w_avg_samples=64),
                            motion_steps=2)
    assert s["frames_used"] == 2 and s["frames_without_face"] == 1
    for name in ("reconstruction.safetensors", "aligned.mp4", "reconstruction.mp4", "novel_view.mp4", "summary.json"):
        assert (out / name).is_file(), name
    rec = P.VideoReconstruction.load(out / "reconstruction.safetensors")
    assert len(rec.ts) == 2 and float(rec.ts[0]) == 0.0
    # (a) another motion seed: same first frame (t = 0 is motion-free), different later frames
    base = list(P.render_sequence(rec.generator, rec.ws, rec.z_motion, rec.ts, rec.cameras))
    a = list(P.remotion(rec, 7))
    assert np.array_equal(a[0], base[0]) and len(a) == 2
    # (b) transfer: another clip's motion code and timestamps drive this identity (a clip made here
    # with its own motion and three frames; transferring a clip onto itself could not tell)
    cam = rec.cameras[:1]
    other = P.VideoReconstruction(rec.generator, rec.ws + 0.3, torch.randn(rec.z_motion.shape, generator=torch.Generator().manual_seed(5)),
                                  torch.tensor([0.0, 0.5, 1.0]), np.concatenate([cam, cam, cam]), {})
    b = list(P.transfer_motion(rec, other, cameras_from="source"))
    want = list(P.render_sequence(rec.generator, rec.ws, other.z_motion, other.ts, other.cameras))
    assert len(b) == 3 and all(np.array_equal(x, y) for x, y in zip(b, want))
    own = list(P.render_sequence(rec.generator, rec.ws, rec.z_motion, other.ts, other.cameras))
    assert np.array_equal(b[0], own[0])                                  # t = 0: no motion, this identity
    assert np.abs(b[2].astype(int) - own[2].astype(int)).mean() > 0.5    # t = 1: the other clip's motion
    assert len(list(P.transfer_motion(rec, other))) == 3                 # this clip's cameras, resampled
    # (c) retime: half speed doubles the frames, endpoints kept
    ts, cams = P.retime(rec, speed=0.5)
    assert len(ts) == 4 and ts[0] == rec.ts[0] and ts[-1] == pytest.approx(float(rec.ts[-1]))
    assert cams.shape == (4, 25)
    assert main(["edit", str(out), "--speed", "2", "-o", str(tmp_path / "fast.mp4")]) == 0
    assert len(layout.read_video(tmp_path / "fast.mp4")) == 2  # min 2 frames
    assert main(["edit", str(out), "--motion-seed", "2", "-o", str(tmp_path / "m.mp4")]) == 0
    assert main(["edit", str(out / "aligned.mp4"), "--speed", "2", "-o", str(tmp_path / "x.mp4")]) == 2


@pytest.fixture(scope="module")
def encoder_beside(tiny_ckpt):
    """An (untrained) encoder saved beside the tiny checkpoint, tied to its weights."""
    from pv3d_core.encoder import EncoderConfig, PortraitEncoder, fingerprint, save_encoder
    from pv3d_core.io import load_generator
    from pv3d_core.paths import encoder_for

    G = load_generator(tiny_ckpt)
    torch.manual_seed(0)
    enc = PortraitEncoder(EncoderConfig.for_generator(G))
    with torch.no_grad():
        enc.to_w.weight.normal_(0, 0.01)        # an output that depends on the photo
    path = save_encoder(encoder_for(tiny_ckpt), enc, fingerprint(G))
    yield path
    path.unlink(missing_ok=True)


def test_the_encoder_gives_the_first_result_and_the_fit_refines_it(tiny_ckpt, encoder_beside, photo):
    """The model's encoder is found beside it: the first state is its latent (before any optimisation
    step), then w+ and PTI with the after-encoder step counts; timings name every stage."""
    from pv3d_core.encoder import encode
    from pv3d_core.io import load_generator

    G = load_generator(tiny_ckpt)
    states, stages = [], []
    cfg = P.PortraitConfig(overrides=dict(wplus_steps=2, pti_steps=1, w_avg_samples=64))
    por = P.prepare_and_invert(photo, G, config=cfg, progress=lambda s, i, n, l=0.0: stages.append(s),
                               on_state=lambda s: states.append((s.stage, s.step, s.ws.clone(), s.label())))
    enc, _ = P.find_encoder(G)
    first = encode(enc, P.image_to_tensor(por.crop, G.img_resolution))["ws"]
    assert states[0][0] == "w+" and states[0][1] == 0 and torch.equal(states[0][2], first)
    assert "w" not in stages and stages[:2] == ["align", "align"] and "encoder" in stages and stages[-1] == "pti"
    assert "left" in states[1][3]
    tm = por.timings
    for k in ("align_s", "encode_s", "wplus_s", "pti_s", "first_result_s", "total_s"):
        assert k in tm, k
    assert tm["first_result_s"] <= tm["align_s"] + tm["encode_s"] + 5 and tm["first_result_s"] < tm["total_s"]
    assert por.inversion.meta["start"] == "encoder"
    # without the encoder: the mean face, the w phase, and a note
    por2 = P.prepare_and_invert(photo, G, config=P.PortraitConfig(encoder=None, overrides=dict(
        w_steps=2, pti_steps=0, w_avg_samples=64)))
    assert "w_s" in por2.timings and "encode_s" not in por2.timings and any("mean face" in n for n in por2.notes)


def test_cli_uses_the_encoder_and_refuses_contradictions(tmp_path, tiny_ckpt, encoder_beside, photo, capsys):
    from pv3d_core.cli import main

    out = tmp_path / "e.mp4"
    rc = main(["animate", str(photo), "--ckpt", str(tiny_ckpt), "--frames", "2", "--wplus-steps", "1",
               "--pti-steps", "1", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "start: encoder" in captured.out and out.is_file()
    assert main(["animate", str(photo), "--ckpt", str(tiny_ckpt), "--encoder", str(encoder_beside), "--no-encoder",
                 "-o", str(tmp_path / "x.mp4")]) == 2
    assert "contradict" in capsys.readouterr().err
    assert main(["animate", str(photo), "--ckpt", str(tiny_ckpt), "--encoder", str(tmp_path / "none.safetensors"),
                 "-o", str(tmp_path / "x.mp4")]) == 2
    assert "encoder not found" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_several_faces_use_the_largest_and_say_so(tiny_generator, photo):
    from PIL import Image

    big = Image.open(photo)
    small = big.resize((big.width // 2, big.height // 2))
    canvas = Image.new("RGB", (big.width + small.width, big.height), (90, 90, 90))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width, 0))
    por = P.prepare_and_invert(np.asarray(canvas), tiny_generator, config=QUICK)
    assert any("2 faces found; the largest was used" in n for n in por.notes)
    assert por.transform["faces_found"] == 2

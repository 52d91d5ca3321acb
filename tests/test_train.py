"""Training: data sampling as the official loader, gradients, exact resume, 2-process gloo, clear errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pv3d_core.data import layout
from pv3d_core.data.dataset import ClipDataset, sample_pair_indices
from pv3d_core.render import cameras
from pv3d_core.train.config import TrainConfig
from pv3d_core.train.loop import Trainer, blur, list_checkpoints, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four 20-frame clips whose frame i is a flat grey of value 10*i (left half) / 255 (right half),
    with cameras whose yaw encodes the frame index: frames and cameras can be told apart."""
    root = tmp_path_factory.mktemp("data")
    names = []
    for k in range(4):
        frames = np.zeros((20, 64, 64, 3), np.uint8)
        cams = []
        for i in range(20):
            frames[i, :, :32] = 10 * i
            frames[i, :, 32:] = 250
            cams.append(cameras.pack(cameras.orbit_cam2world(0.01 * i, 0.02 * k)))
        name = f"clip{k}"
        layout.write_clip(root, name, frames, np.stack(cams))
        names.append(name)
    layout.write_list(root, names)
    return root


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="micro", batch=2, steps=2, checkpoint_every=0, sample_every=0,
                tensorboard=False, g_reg_interval=2, d_reg_interval=2, seed=3)
    base.update(kw)
    return TrainConfig().override(base)


def test_pair_indices_match_official_distribution():
    rng = np.random.default_rng(0)
    draws = np.array([sample_pair_indices(rng, 16 + 1 + 10) for _ in range(20000)])
    lo = draws[:, 0] - 0  # offsets differ; compare timestamps instead
    t1, t2 = draws[:, 2], draws[:, 3]
    # official: a = int(Beta(2,1)*16), b = int(Beta(1,2)*16); t = sorted(a, b) / 15
    ref = np.random.default_rng(1)
    a = (ref.beta(2, 1, 20000) * 16).astype(int)
    b = (ref.beta(1, 2, 20000) * 16).astype(int)
    r1, r2 = np.minimum(a, b) / 15, np.maximum(a, b) / 15
    assert np.all(t1 <= t2) and t1.min() >= 0 and t2.max() <= 1
    for x, y in ((t1, r1), (t2, r2), (t2 - t1, r2 - r1)):
        hx = np.histogram(x, bins=16, range=(0, 1.0001))[0] / len(x)
        hy = np.histogram(y, bins=16, range=(0, 1.0001))[0] / len(y)
        assert np.abs(hx - hy).max() < 0.015
    # frame index = offset + t*15 and within the clip
    assert np.allclose((draws[:, 1] - draws[:, 0]) / 15, t2 - t1)
    assert lo.min() >= 0 and draws[:, 1].max() < 27


def test_dataset_pairs_frames_cameras_and_flip(dataset):
    ds = ClipDataset(dataset, resolution=32)
    rng = np.random.default_rng(5)
    seen_flip = seen_plain = False
    for _ in range(40):
        p = ds.sample(1, rng)
        assert p.frames.shape == (2, 3, 32, 32) and p.frames.min() >= -1 and p.frames.max() <= 1
        i1, i2 = p.indices
        assert np.isclose(float(p.t[1] - p.t[0]), (i2 - i1) / 15)
        # the frame content says which frame it is (dark half = 10*i); flipped frames have it on the right
        for j, idx in enumerate((i1, i2)):
            img = (p.frames[j, 0].numpy() + 1) * 127.5
            dark = img[:, 16:] if p.flipped else img[:, :16]
            assert abs(dark.mean() - 10 * idx) < 3
            yaw, pitch, _ = cameras.yaw_pitch_of(p.cameras[j].numpy())
            assert np.isclose(yaw, -0.01 * idx if p.flipped else 0.01 * idx, atol=1e-4)
            assert np.isclose(pitch, 0.02, atol=1e-4)
        seen_flip |= p.flipped
        seen_plain |= not p.flipped
    assert seen_flip and seen_plain


def test_blur_matches_official_kernel():
    x = torch.zeros(1, 1, 31, 31)
    x[0, 0, 15, 15] = 1
    y = blur(x, 2.0)
    k = torch.arange(-6, 7).float().div(2.0).square().neg().exp2()
    k = k / k.sum()
    assert torch.allclose(y[0, 0, 15, 9:22], k * k[6], atol=1e-6)
    assert torch.allclose(y.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.equal(blur(x, 0.2), x)


def test_every_generator_parameter_gets_gradient(dataset, tmp_path):
    tr = Trainer(_cfg(dataset, tmp_path))
    seen = {}
    for _ in range(2):   # step 0 runs G main + density reg (interval 2)
        tr.opt_g.zero_grad(set_to_none=True)
        orig_step = tr.opt_g.step

        def record(*a, **k):
            for n, p in tr.G.named_parameters():
                if p.grad is not None and p.grad.abs().sum() > 0:
                    seen[n] = True
            return orig_step(*a, **k)

        tr.opt_g.step = record
        tr.train_step()
        tr.opt_g.step = orig_step
    # by design (official config): the super-resolution runs with noise_mode "none", so its noise
    # strengths are not used in training; every other parameter must learn
    assert tr.G.rendering_kwargs["superresolution_noise_mode"] == "none"
    unused = {n for n, _ in tr.G.named_parameters() if n.startswith("superresolution.") and n.endswith("noise_strength")}
    missing = [n for n, p in tr.G.named_parameters() if n not in seen and n not in unused]
    assert not missing, f"no gradient reaches: {missing[:10]}"
    assert any("motion" in n for n in seen)


def test_kill_and_resume_equals_uninterrupted(dataset, tmp_path):
    a = train(_cfg(dataset, tmp_path / "a", steps=4, checkpoint_every=2), progress=False)
    assert a["steps"] == 4
    # interrupted run: stops after 2 steps (as a killed run would have its last checkpoint at 2) ...
    train(_cfg(dataset, tmp_path / "b", steps=2, checkpoint_every=2), progress=False)
    # ... and continues from it
    b = train(_cfg(dataset, tmp_path / "b", steps=4, checkpoint_every=2), resume=True, progress=False)
    assert b["steps_this_run"] == 2
    from pv3d_core.io import read_checkpoint

    ca = read_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    cb = read_checkpoint(list_checkpoints(tmp_path / "b")[-1])
    assert ca.tensors.keys() == cb.tensors.keys()
    diffs = {k: float((ca.tensors[k].float() - cb.tensors[k].float()).abs().max())
             for k in ca.tensors if ca.tensors[k].is_floating_point()}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] == 0.0, f"{worst} differs by {diffs[worst]}"
    assert ca.meta["train"]["rng"] == cb.meta["train"]["rng"]


def test_keeps_last_k_checkpoints_atomically(dataset, tmp_path):
    train(_cfg(dataset, tmp_path, steps=3, checkpoint_every=1, keep_checkpoints=2), progress=False)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint-00000002.safetensors", "checkpoint-00000003.safetensors"]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_two_process_gloo_run_stays_in_sync(dataset, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pv3d_core.cli.train", "--data", str(dataset), "-o", str(out), "--preset", "micro",
           "--steps", "2", "--batch", "2", "--checkpoint-every", "2", "--sample-every", "0", "--threads", "1",
           "--set", "tensorboard=false", "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 and summary["in_sync"] is True
    from pv3d_core.io import read_checkpoint

    ck = read_checkpoint(list_checkpoints(out)[-1])
    assert len(ck.meta["train"]["rng"]) == 2   # both processes' data positions are kept


def test_bad_inputs_give_clear_errors(dataset, tmp_path):
    from pv3d_core.cli import main
    from pv3d_core.io import CheckpointError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(layout.DatasetError, match="not a PV3D dataset"):
        Trainer(_cfg(empty, tmp_path / "o"))
    # unreadable video
    broken = tmp_path / "broken"
    layout.write_cameras(broken / layout.CAMERA_DIR / "x.json", np.zeros((3, 25)))
    (broken / layout.VIDEO_DIR).mkdir(parents=True)
    (broken / layout.VIDEO_DIR / "x.mp4").write_bytes(b"not a video at all")
    layout.write_list(broken, ["x"])
    ds = ClipDataset(broken, 32)
    with pytest.raises(layout.DatasetError, match="cannot decode video"):
        ds.sample(0, np.random.default_rng(0))
    # corrupt checkpoint to fine-tune from, and on resume
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        Trainer(_cfg(dataset, tmp_path / "o2", init=str(bad)))
    run = tmp_path / "o3"
    run.mkdir()
    (run / "checkpoint-00000005.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        Trainer(_cfg(dataset, run), resume=True)
    # the CLI turns them into one line and exit status 2
    assert main(["train", "--data", str(empty), "-o", str(tmp_path / "o4"), "--preset", "micro"]) == 2
    assert main(["train", "--data", str(dataset), "--set", "no_such_option=1"]) == 2


def test_resume_refuses_a_mistyped_run_folder_and_skips_a_corrupt_latest_checkpoint(dataset, tmp_path, caplog):
    """--resume with a wrong folder used to start from scratch silently; a corrupt latest checkpoint
    (a disk error, a copy cut short) used to stop the resume although an older one was kept."""
    from pv3d_core.errors import UsageError

    for folder in (tmp_path / "typo", tmp_path):
        with pytest.raises(UsageError, match="--resume: the run folder"):
            Trainer(_cfg(dataset, folder), resume=True)
    run = tmp_path / "run"
    train(_cfg(dataset, run, steps=2, checkpoint_every=1), progress=False)
    latest = list_checkpoints(run)[-1]
    latest.write_bytes(latest.read_bytes()[:1000])          # cut short
    with caplog.at_level("WARNING", logger="pv3d_core"):
        tr = Trainer(_cfg(dataset, run, steps=4), resume=True)
    assert tr.step == 1 and "skipping the unreadable checkpoint" in caplog.text and latest.name in caplog.text


def test_fine_tune_starts_from_the_checkpoint(dataset, tmp_path):
    train(_cfg(dataset, tmp_path / "a", steps=1), progress=False)
    ck = list_checkpoints(tmp_path / "a")[-1]
    tr = Trainer(_cfg(dataset, tmp_path / "b", init=str(ck)))
    from pv3d_core.io import read_checkpoint

    src = read_checkpoint(ck).part("generator")
    for k, v in tr.G.state_dict().items():
        assert torch.equal(v, src[k]), k
    assert tr.step == 0 and tr.mcfg.name == "micro"


def test_set_values_take_the_options_declared_types():
    """--set used to guess a type from the current value: a None default kept the text ('64' stayed a
    string) and init=None became the path 'None'."""
    from pv3d_core.errors import UsageError

    cfg = TrainConfig().override({"neural_res_initial": "64", "neural_res_final": "128", "init": "None",
                                  "lr_g": "1e-3", "tensorboard": "false", "betas_g": "0,0.99", "ema_rampup": "null",
                                  "steps": "10"})
    assert cfg.neural_res_initial == 64 and type(cfg.neural_res_initial) is int and cfg.neural_res_final == 128
    assert cfg.init is None and cfg.ema_rampup is None
    assert cfg.lr_g == 1e-3 and cfg.tensorboard is False and cfg.betas_g == (0.0, 0.99) and cfg.steps == 10
    assert TrainConfig().override({"init": "runs/a.safetensors", "betas_g": [0, 0.9]}).betas_g == (0.0, 0.9)
    for bad, msg in (({"steps": "ten"}, "steps must be an integer"), ({"batch": "None"}, "batch must be an integer"),
                     ({"tensorboard": "maybe"}, "true or false"), ({"lr_d": "fast"}, "lr_d must be a number")):
        with pytest.raises(UsageError, match=msg):
            TrainConfig().override(bad)


def test_dataset_is_read_at_the_init_checkpoints_resolution(dataset, tmp_path):
    """--init swaps in the checkpoint's model config; the data must follow it, not the preset's size."""
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator, save_checkpoint

    mcfg = preset("micro")
    ck = save_checkpoint(tmp_path / "micro.safetensors", mcfg, {"generator": build_generator(mcfg)})
    tr = Trainer(_cfg(dataset, tmp_path / "o", preset="pv3d-vox512", init=str(ck)))
    assert tr.mcfg.generator.img_resolution == 128 and tr.data.resolution == 128


def test_a_batch_the_minibatch_std_groups_do_not_divide_is_refused_at_start(dataset, tmp_path, capsys):
    from pv3d_core.cli import main
    from pv3d_core.errors import UsageError

    with pytest.raises(UsageError, match="minibatch-std groups of 4 do not divide.*1, 2, 4, 8"):
        Trainer(_cfg(dataset, tmp_path / "o", batch=3))
    assert main(["train", "--data", str(dataset), "-o", str(tmp_path / "o2"), "--preset", "micro", "--batch", "6",
                 "--steps", "1", "--no-progress", "--set", "tensorboard=false"]) == 2
    assert "video discriminator 6 samples" in capsys.readouterr().err
    assert not list((tmp_path / "o2").glob("checkpoint-*"))

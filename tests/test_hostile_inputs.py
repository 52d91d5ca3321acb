"""Hostile files, full disks, signals and absurd arguments (issue 17), as tables new commands inherit.

Three promises are checked for every probe:
- a user's mistake (or a hostile file, or a full disk) ends in ONE line on stderr and exit status 2,
  never a traceback;
- nothing that existed before the failed run is changed by it (the folder is compared byte for byte,
  modes and times included) and no temporary is left;
- no size read from a flag or a file is trusted: every numeric flag of every command takes a bounded
  rule (tested from the parser itself, so a new command's flags are covered the day they are added).

Add a row to PROBES for each new way in; add a flag with a bare ``type=int``/``float`` and
``test_every_numeric_flag_is_bounded`` fails.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_files import bomb_png, write_ours
from pv3d_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ inputs

def _hostile_generator_configs():
    """(name, change to the generator's config dict): each would allocate gigabytes, build millions of
    layers, or fail with a TypeError deep inside torch, if it were believed."""
    def rk(**kw):
        return lambda g: g["rendering_kwargs"].update(kw)
    return {
        "z_dim_1e9": (lambda g: g.update(z_dim=10 ** 9), "generator.z_dim"),
        "plane_channels_1e6": (lambda g: g.update(plane_channels=10 ** 6), "generator.plane_channels"),
        "depth_samples_1e7": (rk(depth_resolution=10 ** 7), "depth_resolution"),
        "mapping_layers_1e7": (lambda g: g.update(mapping_kwargs={"num_layers": 10 ** 7}), "num_layers"),
        "neural_res_1e5": (lambda g: g.update(neural_rendering_resolution=10 ** 5), "neural_rendering_resolution"),
        "channel_max_huge": (lambda g: g.update(channel_max=2 ** 20, channel_base=2 ** 40), "channel"),
        "z_dim_text": (lambda g: g.update(z_dim="512"), "generator.z_dim"),
        "channel_base_text": (lambda g: g.update(channel_base="abc"), "generator.channel_base"),
        "ray_start_nan": (rk(ray_start=float("nan")), "ray_start"),
        "rendering_kwargs_list": (lambda g: g.update(rendering_kwargs=[1, 2]), "rendering_kwargs"),
        "motion_res_text": (lambda g: g.update(motion_resolutions="4,8"), "motion_resolutions"),
        "mapping_kwargs_unknown": (lambda g: g.update(mapping_kwargs={"num_layers": 2, "evil": 1}), "evil"),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_generator, tiny_ckpt):
    """Hostile and ordinary input files, made once; the probes must leave every one of them unchanged."""
    from pv3d_core.config import ModelConfig
    from pv3d_core.fit_files import save_portrait
    from pv3d_core.invert import InversionResult
    from pv3d_core.io import save_generator

    d = tmp_path_factory.mktemp("inputs")
    cfg = ModelConfig(generator=tiny_generator.config, name="tiny").to_dict()
    tensors = {f"generator_ema.{k}": v for k, v in tiny_generator.state_dict().items()}
    files = {"ckpt": str(tiny_ckpt)}
    for name, (change, _) in _hostile_generator_configs().items():
        c = json.loads(json.dumps(cfg))
        change(c["generator"])
        files[name] = str(write_ours(d / f"{name}.safetensors", c, tensors))
    files["config_nested"] = str(write_ours(d / "nested.safetensors", cfg, tensors,
                                             raw_config="[" * 100_000 + "]" * 100_000))
    files["config_not_json"] = str(write_ours(d / "notjson.safetensors", cfg, tensors, raw_config="{z_dim: 5"))
    official = {"model": dict(tensors),
                "config": {"model_config": {"pv3d": {"generator": {**cfg["generator"], "z_dim": 10 ** 9}}}}}
    torch.save(official, d / "official_z_dim.ckpt")
    files["official_z_dim"] = str(d / "official_z_dim.ckpt")
    nan = dict(tensors)
    k = next(k for k in nan if k.endswith("weight"))
    nan[k] = nan[k].clone().fill_(float("nan"))
    files["nan_weights"] = str(write_ours(d / "nan.safetensors", cfg, nan))
    # a portrait whose latent has the wrong shape
    res = InversionResult(ws=torch.zeros(1, 3, 7), generator=tiny_generator, camera=np.zeros(25, np.float32),
                          metrics={})
    files["portrait_bad_ws"] = str(save_portrait(d / "bad_ws.safetensors", res))
    # safetensors files that are no portrait: none of ours, and a model checkpoint
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, str(d / "foreign.safetensors"))
    files["foreign_safetensors"] = str(d / "foreign.safetensors")
    files["garbage_safetensors"] = str(d / "garbage.safetensors")
    Path(files["garbage_safetensors"]).write_bytes(b"\xff" * 64)
    files["model_as_portrait"] = str(save_generator(d / "model.safetensors", tiny_generator, name="tiny"))
    for name in ("fifo", "fifo.mp4"):
        os.mkfifo(d / name)
    files["fifo"], files["fifo_mp4"] = str(d / "fifo"), str(d / "fifo.mp4")
    (d / "text.jpg").write_text("hello")
    files["text_jpg"] = str(d / "text.jpg")
    files["bomb_png"] = str(bomb_png(d / "bomb.png", 20000, 20000))
    files["big_png"] = str(bomb_png(d / "big.png", 10000, 10000))    # 100 MP: over the limit, under Pillow's 2x
    (d / "config_nested.json").write_text("[" * 100_000 + "]" * 100_000)
    files["train_config_nested"] = str(d / "config_nested.json")
    (d / "config_list.json").write_text("[1, 2]")
    files["train_config_list"] = str(d / "config_list.json")
    files["dataset"] = str(_dataset(d / "data"))
    files["dir"] = str(d)
    return files


def _dataset(root):
    from pv3d_core.data import layout
    from pv3d_core.render import cameras

    names = []
    for k in range(2):
        frames = np.full((20, 64, 64, 3), 40 * k, np.uint8)
        cams = np.stack([cameras.pack(cameras.orbit_cam2world(0.01 * i, 0.0)) for i in range(20)])
        layout.write_clip(root, f"clip{k}", frames, cams)
        names.append(f"clip{k}")
    layout.write_list(root, names)
    return root


def _existing_outputs(out: Path, tiny_ckpt) -> None:
    """What a user already has in the output folder: a good mp4, a checkpoint, an earlier reconstruction."""
    from pv3d_core.export import write_mp4

    write_mp4(out / "good.mp4", [np.full((16, 16, 3), 99, np.uint8)] * 3)
    os.chmod(out / "good.mp4", 0o640)
    (out / "model.safetensors").write_bytes(Path(tiny_ckpt).read_bytes())
    (out / "rec").mkdir()
    for n in ("aligned.mp4", "reconstruction.safetensors", "summary.json"):
        (out / "rec" / n).write_bytes(b"an earlier reconstruction: " + n.encode())


def snapshot(*folders) -> dict:
    """Every entry under ``folders``: kind, mode, size, mtime and content, to compare before/after."""
    snap = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            st = p.lstat()
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            snap[str(p)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, content)
    return snap


# ------------------------------------------------------------------------------------ the probe table

def _fake_ffmpeg(tmp: Path, rc: int) -> str:
    """An ffmpeg that reads its input, writes a truncated file and reports a full disk."""
    exe = tmp.parent / f"ffmpeg-full-disk-{rc}"
    exe.write_text("#!/bin/sh\nfor last; do :; done\ncat > /dev/null\nprintf 'truncated' > \"$last\"\n"
                   "echo '[out#0/mp4 @ 0x1] Error writing trailer: No space left on device' >&2\n"
                   f"exit {rc}\n")
    exe.chmod(0o755)
    return str(exe)


def _safetensors_disk_full(monkeypatch):
    import safetensors.torch

    def save_file(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


G = ["--ckpt", "{ckpt}"]
#: (id, argv, what stderr must say, optional setup(monkeypatch, tmp) run before)
PROBES = [
    # 1. full disks: the good file that was there stays, the error is one line
    ("generate-ffmpeg-full-disk", ["generate", *G, "--frames", "2", "-o", "{tmp}/good.mp4"],
     "No space left on device", lambda mp, tmp: mp.setenv("IMAGEIO_FFMPEG_EXE", _fake_ffmpeg(tmp, 1))),
    ("generate-ffmpeg-error-but-status-0", ["generate", *G, "--frames", "2", "-o", "{tmp}/good.mp4"],
     "Error writing trailer", lambda mp, tmp: mp.setenv("IMAGEIO_FFMPEG_EXE", _fake_ffmpeg(tmp, 0))),
    ("animate-a-model-checkpoint", ["animate", "{model_as_portrait}", "-o", "{tmp}/good.mp4"],
     "is not a saved portrait", None),
    ("convert-safetensors-full-disk", ["convert", "{ckpt}", "{tmp}/model.safetensors"],
     "cannot write", lambda mp, tmp: _safetensors_disk_full(mp)),
    # 2. an earlier reconstruction is never mixed with a new one
    ("reconstruct-into-earlier-reconstruction", ["reconstruct", "{tmp}/good.mp4", *G, "-o", "{tmp}/rec"],
     "is not empty", None),
    ("reconstruct-into-a-file", ["reconstruct", "{tmp}/good.mp4", *G, "-o", "{tmp}/good.mp4"], "is a file", None),
    # 3. hostile configs (refused before anything is built or allocated), one per field kind
    *[(f"config-{name}", ["generate", "--ckpt", "{" + name + "}", "--frames", "1", "-o", "{tmp}/g.mp4"], field, None)
      for name, (_, field) in _hostile_generator_configs().items()],
    ("config-nested-json", ["info", "{config_nested}"], "invalid model config", None),
    ("config-not-json", ["info", "{config_not_json}"], "invalid model config", None),
    ("official-ckpt-z-dim-1e9", ["info", "{official_z_dim}"], "generator.z_dim", None),
    ("portrait-latent-of-the-wrong-shape", ["animate", "{portrait_bad_ws}", "-o", "{tmp}/a.mp4"], "ws has shape", None),
    ("mesh-of-a-portrait-of-the-wrong-shape", ["mesh", "--portrait", "{portrait_bad_ws}", "-o", "{tmp}/m.ply"],
     "ws has shape", None),
    ("train-config-nested", ["train", "--data", "{dataset}", "--config", "{train_config_nested}"], "not valid JSON", None),
    ("train-config-not-an-object", ["train", "--data", "{dataset}", "--config", "{train_config_list}"],
     "JSON object", None),
    # 4. absurd arguments: each message names the flag
    ("generate-frames-1e9", ["generate", *G, "--frames", "1000000000", "-o", "{tmp}/g.mp4"], "--frames", None),
    ("generate-seeds-0-1e9", ["generate", *G, "--seeds", "0-1000000000", "-o", "{tmp}/g.mp4"], "--seeds", None),
    ("generate-psi-nan", ["generate", *G, "--psi", "nan", "-o", "{tmp}/g.mp4"], "--psi", None),
    ("generate-psi-inf", ["generate", *G, "--psi", "inf", "-o", "{tmp}/g.mp4"], "--psi", None),
    ("generate-yaw-nan", ["generate", *G, "--yaw", "nan", "-o", "{tmp}/g.mp4"], "--yaw", None),
    ("generate-fps-0", ["generate", *G, "--fps", "0", "-o", "{tmp}/g.mp4"], "--fps", None),
    ("generate-fps-negative", ["generate", *G, "--fps=-5", "-o", "{tmp}/g.mp4"], "--fps", None),
    ("generate-resolution-odd-size-h264", ["generate", *G, "--frames", "1", "--resolution", "17",
                                           "-o", "{tmp}/good.mp4"], "even frame sizes", None),
    ("edit-speed-1e-9", ["edit", "{tmp}/rec", "--speed", "1e-9", "-o", "{tmp}/e.mp4"], "--speed", None),
    ("animate-frames-1e9", ["animate", "{text_jpg}", "--frames", "1000000000", "-o", "{tmp}/a.mp4"], "--frames", None),
    ("mesh-frames-0", ["mesh", *G, "--frames", "0", "-o", "{tmp}/m.ply"], "--frames", None),
    ("mesh-res-1e5", ["mesh", *G, "--res", "100000", "-o", "{tmp}/m.ply"], "--res", None),
    ("train-set-betas-5", ["train", "--data", "{dataset}", "--set", "betas_g=5"], "betas_g", None),
    ("train-set-lr-abc", ["train", "--data", "{dataset}", "--set", "lr_g=abc"], "lr_g", None),
    ("train-set-lr-nan", ["train", "--data", "{dataset}", "--set", "lr_g=nan"], "lr_g", None),
    ("train-set-batch-huge", ["train", "--data", "{dataset}", "--set", "batch=1000000000"], "batch", None),
    ("train-steps-negative", ["train", "--data", "{dataset}", "--steps=-1"], "--steps", None),
    ("warmstart-lr-inf", ["warmstart", "--data", "{dataset}", "--lr", "inf", "-o", "{tmp}/w"], "--lr", None),
    ("distill-steps-negative", ["distill", "--steps=-1", "-o", "{tmp}/d"], "--steps", None),
    ("distill-lr-nan", ["distill", "--lr", "nan", "-o", "{tmp}/d"], "--lr", None),
    ("distill-ssaa-9", ["distill", "--ssaa", "9", "-o", "{tmp}/d"], "--ssaa", None),
    ("distill-batch-huge", ["distill", "--batch", "100000000", "-o", "{tmp}/d"], "--batch", None),
    ("distill-init-hostile", ["distill", "--init", "{z_dim_1e9}", "--steps", "1", "-o", "{tmp}/d"],
     "generator.z_dim", None),
    ("animate-pti-steps-1e9", ["animate", "{text_jpg}", "--pti-steps", "1000000000", "-o", "{tmp}/a.mp4"],
     "--pti-steps", None),
    ("animate-wplus-steps-negative", ["animate", "{text_jpg}", "--wplus-steps=-1", "-o", "{tmp}/a.mp4"],
     "--wplus-steps", None),
    ("animate-encoder-and-no-encoder", ["animate", "{text_jpg}", "--encoder", "{ckpt}", "--no-encoder",
                                        "-o", "{tmp}/a.mp4"], "contradict", None),
    ("animate-encoder-missing", ["animate", "{text_jpg}", "--encoder", "{tmp}/none.safetensors", "-o", "{tmp}/a.mp4"],
     "encoder not found", None),
    ("reconstruct-encoder-missing", ["reconstruct", "{tmp}/good.mp4", *G, "--encoder", "{tmp}/none.safetensors",
                                     "-o", "{tmp}/rec2"], "encoder not found", None),
    ("train-encoder-steps-negative", ["train-encoder", *G, "--steps=-1", "-o", "{tmp}/e.safetensors"], "--steps", None),
    ("train-encoder-lr-nan", ["train-encoder", *G, "--lr", "nan", "-o", "{tmp}/e.safetensors"], "--lr", None),
    ("train-encoder-batch-huge", ["train-encoder", *G, "--batch", "100000000", "-o", "{tmp}/e.safetensors"],
     "--batch", None),
    ("train-encoder-max-minutes-inf", ["train-encoder", *G, "--max-minutes", "inf", "-o", "{tmp}/e.safetensors"],
     "--max-minutes", None),
    ("train-encoder-not-safetensors", ["train-encoder", *G, "-o", "{tmp}/e.pt"], "must end in .safetensors", None),
    ("train-encoder-init-garbage", ["train-encoder", *G, "--init", "{garbage_safetensors}", "--steps", "1",
                                    "-o", "{tmp}/e.safetensors"], "not a readable safetensors file", None),
    ("train-encoder-init-a-model", ["train-encoder", *G, "--init", "{ckpt}", "--steps", "1", "-o", "{tmp}/e.safetensors"],
     "not a PV3D Studio portrait encoder", None),
    ("eval-videos-huge", ["eval", "--videos", "1000000000", "-o", "{tmp}/r.json"], "--videos", None),
    ("synth-clips-huge", ["data", "synth", "--clips", "1000000000", "-o", "{tmp}/s"], "--clips", None),
    ("align-size-huge", ["align", "{text_jpg}", "--size", "100000"], "--size", None),
    # 5. (signals: see the tests below the table)
    # 7. photos
    ("photo-decompression-bomb", ["align", "{bomb_png}"], "too large", None),
    ("photo-100-megapixels", ["align", "{big_png}"], "too large", None),
    # 8. smaller ones
    ("train-resume-mistyped-run-folder", ["train", "--data", "{dataset}", "-o", "{tmp}/no-such-run", "--resume",
                                          "--preset", "micro"], "--resume", None),
    ("animate-foreign-safetensors", ["animate", "{foreign_safetensors}", "-o", "{tmp}/a.mp4"],
     "not a PV3D Studio checkpoint", None),
    ("animate-garbage-safetensors", ["animate", "{garbage_safetensors}", "-o", "{tmp}/a.mp4"],
     "not a readable safetensors file", None),
    ("info-fifo", ["info", "{fifo}"], "not a regular file", None),
    ("generate-fifo-checkpoint", ["generate", "--ckpt", "{fifo}", "-o", "{tmp}/g.mp4"], "not a regular file", None),
    ("align-fifo", ["align", "{fifo}"], "not a regular file", None),
    ("generate-output-is-a-fifo", ["generate", *G, "--frames", "1", "-o", "{fifo_mp4}"], "not a regular file", None),
    ("generate-frames-folder-is-a-fifo", ["generate", *G, "--frames", "1", "-o", "{fifo}"], "is not a folder", None),
    ("generate-nan-weights", ["generate", "--ckpt", "{nan_weights}", "--frames", "1", "-o", "{tmp}/g.mp4"],
     "NaN", None),
    ("unknown-option", ["generate", "--frobnicate", "-o", "{tmp}/g.mp4"], "unrecognized arguments", None),
]


@pytest.mark.parametrize("name, argv, message, setup", PROBES, ids=[p[0] for p in PROBES])
def test_probe_is_one_line_exit_2_and_changes_nothing(name, argv, message, setup, inputs, tmp_path, tiny_ckpt,
                                                     monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _existing_outputs(out, tiny_ckpt)
    if setup:
        setup(monkeypatch, out)
    subs = dict(inputs, tmp=str(out))
    argv = [a.format(**subs) for a in argv]
    capsys.readouterr()
    before = snapshot(out, inputs["dir"])
    t0 = time.time()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-3000:]}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
    assert message in err, err
    assert snapshot(out, inputs["dir"]) == before, "a failed run changed what was there"
    assert time.time() - t0 < 60, "refusing took too long"


# ------------------------------------------------------------------------------------ every flag is bounded

def _all_flags():
    """(command, action) for every option and positional of every (sub)command."""
    def walk(parser, path):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from walk(sub, path + [name])
            elif a.option_strings or a.dest != "help":
                yield " ".join(path), a
    return list(walk(build_parser(), []))


def test_every_numeric_flag_is_bounded():
    """A bare int or float lets 10**9 frames, nan or inf through to the library; the rules do not."""
    bare = [f"pv3d {cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, a in _all_flags() if a.type in (int, float)]
    assert not bare, "flags without bounds (use a rule from pv3d_core.rules, e.g. type=Int(1, 100).flag): " + ", ".join(bare)


NUMERIC = [(cmd, a) for cmd, a in _all_flags() if a.type is not None and a.type is not str and a.choices is None]


@pytest.mark.parametrize("cmd, action", NUMERIC, ids=[f"{c}:{a.option_strings[0] if a.option_strings else a.dest}"
                                                      for c, a in NUMERIC])
def test_numeric_flags_refuse_absurd_values_and_take_their_defaults(cmd, action):
    for text in ("nan", "inf", "-inf", "1e309", "1000000000000", "-1000000000000", "abc", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(text)
    if action.default is not None and not isinstance(action.default, list):
        value = action.type(str(action.default))
        assert value == action.default or math.isclose(value, action.default)


def test_a_bad_flag_is_one_line_with_exit_2(capsys):
    assert main(["generate", "--frames", "0", "-o", "x.mp4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "argument --frames" in err and "pv3d generate --help" in err


# ------------------------------------------------------------------------------------ configs, in one place

def test_released_and_preset_configs_pass_and_each_bound_is_a_config_error():
    from pv3d_core.config import PRESETS, GeneratorConfig, ModelConfig, preset
    from pv3d_core.errors import ConfigError, UserError

    for name in PRESETS:
        cfg = preset(name)
        assert ModelConfig.from_dict(json.loads(cfg.to_json())).to_dict() == cfg.to_dict()
    base = preset("pv3d-vox512").generator.to_dict()
    for name, (change, field) in _hostile_generator_configs().items():
        g = json.loads(json.dumps(base))
        change(g)
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            GeneratorConfig.from_dict(g)
    assert issubclass(ConfigError, UserError) and not issubclass(ConfigError, ValueError)


def test_training_options_are_checked_from_every_source(tmp_path):
    from pv3d_core.errors import UsageError
    from pv3d_core.train.config import TrainConfig
    from pv3d_core.train.distill import DistillConfig
    from pv3d_core.train.recon import ReconConfig

    for bad, msg in (({"betas_g": "5"}, "betas_g"), ({"betas_d": [0.5, 2]}, "betas_d"), ({"eps": 0}, "eps"),
                     ({"keep_checkpoints": 0}, "keep_checkpoints"), ({"neural_res_final": 10 ** 6}, "neural_res_final"),
                     ({"seed": -1}, "seed"), ({"gpc_reg_prob": 2}, "gpc_reg_prob")):
        with pytest.raises(UsageError, match=msg):
            TrainConfig().override(bad)
    with pytest.raises(UsageError, match="steps"):
        DistillConfig(steps=-1).validate()
    with pytest.raises(UsageError, match="lr"):
        ReconConfig(data="d", lr=float("nan")).validate()


# ------------------------------------------------------------------------------------ full disks, for real

def _tiny_tmpfs(path: Path, size="200k") -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _tiny_tmpfs(disk):
        pytest.skip("needs root to mount a 200 KB tmpfs (the fake-ffmpeg probes above cover the logic)")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_disk_keeps_the_good_mp4_and_checkpoint(full_disk, tiny_ckpt, capsys):
    from pv3d_core.export import write_mp4

    good = write_mp4(full_disk / "g.mp4", [np.full((16, 16, 3), 7, np.uint8)] * 2)
    before = good.read_bytes()
    st = os.statvfs(full_disk)                   # leave 8 KB: less than 24 frames of 128² need
    (full_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8192))
    rc = main(["generate", "--ckpt", str(tiny_ckpt), "--frames", "24", "-o", str(good)])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err, err
    assert good.read_bytes() == before and sorted(p.name for p in full_disk.iterdir()) == ["filler", "g.mp4"]
    rc = main(["convert", str(tiny_ckpt), str(full_disk / "m.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", "g.mp4"]


# ------------------------------------------------------------------------------------ signals

def _pv3d(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PV3D_TEST_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "pv3d_core.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"the command ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def _temporaries(folder):
    """Hidden entries that look like a writer's temporary (ours: .<name>.pv3d-tmp.<random>...)."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.count(".") >= 2]


@pytest.mark.slow
@pytest.mark.parametrize("sig, output", [(signal.SIGTERM, "good.mp4"), (signal.SIGHUP, "frames")])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(sig, output, tmp_path, tiny_ckpt):
    _existing_outputs(tmp_path, tiny_ckpt)
    before = snapshot(tmp_path)
    p = _pv3d(["generate", "--ckpt", str(tiny_ckpt), "--frames", "5000", "-o", str(tmp_path / output)], tmp_path)
    _wait_for(lambda: _temporaries(tmp_path), p)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err, err[-2000:]
    assert not _temporaries(tmp_path) and snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_a_training_checkpoint(sig, inputs, tmp_path):
    run = tmp_path / "run"
    p = _pv3d(["train", "--data", inputs["dataset"], "-o", str(run), "--preset", "micro", "--batch", "2",
               "--steps", "100000", "--checkpoint-every", "0", "--sample-every", "0", "--threads", "1",
               "--set", "tensorboard=false", "--no-progress"], tmp_path)
    _wait_for(lambda: (run / "config.json").exists(), p)
    time.sleep(3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    summary = json.loads(out[out.index("{"):])
    assert summary["interrupted"] is True and summary["checkpoint"], summary
    assert Path(summary["checkpoint"]).is_file() and not _temporaries(run)


def test_stale_temporaries_of_a_killed_run_are_removed_at_the_next_run(tmp_path, tiny_ckpt, capsys):
    old = time.time() - 3600
    stale = [tmp_path / ".g.pv3d-tmp.abcd1234.mp4", tmp_path / ".checkpoint-00000100.pv3d-tmp.k9_x0a1b.safetensors",
             tmp_path / ".pv3d-tmp.zzzzzzzz.probe"]
    for p in stale:
        p.write_bytes(b"partial")
    folder = tmp_path / ".frames.pv3d-tmp.q1w2e3r4"
    folder.mkdir()
    (folder / "frame_00000.png").write_bytes(b"x")
    stale.append(folder)
    young = tmp_path / ".h.pv3d-tmp.young123.mp4"      # a run that is starting right now
    young.write_bytes(b"")
    users = [tmp_path / ".g.mp4", tmp_path / "notes.pv3d-tmp.txt", tmp_path / ".g.abcd1234.mp4"]
    for p in users:
        p.write_text("mine")
    for p in stale + users:
        os.utime(p, (old, old))
    assert main(["generate", "--ckpt", str(tiny_ckpt), "--frames", "1", "-o", str(tmp_path / "new.mp4")]) == 0
    assert not any(p.exists() for p in stale)
    assert young.exists() and all(p.read_text() == "mine" for p in users)
    assert "stale temporary" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the viewer's settings file

SETTINGS_PROBES = [
    # (id, file content, expected (field, value) after load, what the note must mention or None)
    ("nested", "[" * 100_000 + "]" * 100_000, {}, "nested too deeply"),
    ("nested-object", '{"a": ' * 50_000 + "1" + "}" * 50_000, {}, "nested too deeply"),
    ("bom", "\ufeff" + json.dumps({"export_frames": 30}), {"export_frames": 30}, None),
    ("export-resolution-100000", json.dumps({"export_resolution": 100000}), {"export_resolution": 256},
     "export_resolution"),
    ("export-frames-1e12", json.dumps({"export_frames": 10 ** 12}), {"export_frames": 48}, "export_frames"),
    ("export-fps-inf", '{"export_fps": Infinity}', {"export_fps": 25.0}, "export_fps"),
    ("export-fps-nan", '{"export_fps": NaN}', {"export_fps": 25.0}, "export_fps"),
    ("export-camera-spiral", json.dumps({"export_camera": "spiral"}), {"export_camera": "fixed"}, "export_camera"),
    ("window-huge", json.dumps({"window_width": 10 ** 9, "window_height": "tall"}),
     {"window_width": 1280, "window_height": 800}, "window_width, window_height"),
    ("checkpoint-not-text", json.dumps({"last_checkpoint": 7}), {"last_checkpoint": None}, "last_checkpoint"),
    ("not-an-object", "[1, 2, 3]", {}, "not a JSON object"),
    ("binary", "\x00\x01garbage", {}, "ignored"),
    ("good", json.dumps({"export_fps": 30, "export_frames": 100, "export_resolution": 512, "export_camera": "orbit"}),
     {"export_fps": 30.0, "export_frames": 100, "export_resolution": 512, "export_camera": "orbit"}, None),
]


@pytest.mark.parametrize("name, text, want, note", SETTINGS_PROBES, ids=[p[0] for p in SETTINGS_PROBES])
def test_viewer_settings_are_validated_on_load(name, text, want, note, tmp_path):
    from pv3d_viewer import settings_store as SS

    p = tmp_path / "viewer.json"
    p.write_text(text, encoding="utf-8")
    s, warn = SS.load(p)
    for k, v in want.items():
        assert getattr(s, k) == v and type(getattr(s, k)) is type(v), (k, getattr(s, k))
    if note is None:
        assert warn is None, warn
    else:
        assert warn and note in warn, warn
    SS.save(s, tmp_path / "again.json")
    assert SS.load(tmp_path / "again.json")[1] is None     # what was saved loads cleanly


def test_viewer_settings_keep_unknown_keys(tmp_path):
    from pv3d_viewer import settings_store as SS

    p = tmp_path / "viewer.json"
    p.write_text(json.dumps({"export_frames": 30, "from_a_newer_version": {"x": [1, 2]}}))
    s, _ = SS.load(p)
    s.export_frames = 31
    SS.save(s, p)
    assert json.loads(p.read_text()) == {**json.loads(json.dumps(SS.ViewerSettings().to_json_dict())),
                                         "export_frames": 31, "from_a_newer_version": {"x": [1, 2]}}

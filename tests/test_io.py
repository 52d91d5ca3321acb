"""Checkpoint loading and saving: safe, strict, clear errors, nothing partial left behind."""
import os
import pickle

import pytest
import torch

from conftest import FIXTURE, need_fixture
from pv3d_core.cli import main as cli
from pv3d_core.io import CheckpointError, load_generator, read_checkpoint, save_generator


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_roundtrip_ours_is_exact(tiny_generator, tiny_ckpt):
    G = load_generator(tiny_ckpt)
    for (k, a), (k2, b) in zip(tiny_generator.state_dict().items(), G.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert (G.z_dim, G.motion_dim, G.c_dim, G.img_resolution) == (128, 128, 25, 128)
    assert G.rendering_kwargs["depth_resolution"] == 24


def test_missing_file():
    with pytest.raises(CheckpointError, match="not found"):
        load_generator("/nonexistent/model.safetensors")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_generator(p)
    p = tmp_path / "broken.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_generator(p)


def test_truncated_checkpoint(tmp_path, tiny_ckpt):
    p = tmp_path / "cut.safetensors"
    p.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        load_generator(p)


def test_pickle_that_would_execute_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "payload": _Exploit(marker)}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(p)
    assert not marker.exists()
    p2 = tmp_path / "evil_raw.ckpt"
    p2.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_generator(p2)
    assert not marker.exists()


def test_other_architecture_names_the_differences(tmp_path):
    need_fixture()
    obj = torch.load(FIXTURE / "official_format.ckpt", map_location="cpu", weights_only=True)
    obj["config"]["model_config"]["pv3d"]["generator"]["channel_max"] = 32
    p = tmp_path / "other.ckpt"
    torch.save(obj, p)
    with pytest.raises(CheckpointError) as e:
        load_generator(p)
    msg = str(e.value)
    assert "other shapes" in msg and "backbone.synthesis" in msg and "\n" not in msg


def test_checkpoint_without_config(tmp_path):
    p = tmp_path / "noconf.ckpt"
    torch.save({"model": {"x": torch.zeros(1)}}, p)
    with pytest.raises(CheckpointError, match="architecture"):
        load_generator(p)


def test_unwritable_output_leaves_nothing(tmp_path, tiny_generator):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            target = "/proc/pv3d-test/model.safetensors"
        else:
            target = ro / "model.safetensors"
        with pytest.raises(CheckpointError, match="cannot"):
            save_generator(target, tiny_generator)
    finally:
        os.chmod(ro, 0o700)
    assert list(ro.iterdir()) == []


def test_save_is_atomic_on_failure(tmp_path, tiny_generator, monkeypatch):
    import safetensors.torch as st

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(RuntimeError):
        save_generator(target, tiny_generator)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["generate", "--ckpt", str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    (tmp_path / "a.txt").write_text("x")
    assert cli(["info", str(tmp_path / "a.txt")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_convert_cli_official(tmp_path, capsys):
    need_fixture()
    out = tmp_path / "m.safetensors"
    assert cli(["convert", str(FIXTURE / "official_format.ckpt"), str(out)]) == 0
    ck = read_checkpoint(out)
    assert {k.split(".")[0] for k in ck.tensors} == {"generator", "generator_ema", "img_discriminator",
                                                     "vid_discriminator"}
    assert ck.meta["current_iteration"] is not None


def test_portrait_check_reads_only_the_header(tmp_path, tiny_generator, monkeypatch):
    """The viewer asks on the UI thread whether a dropped file is a portrait: the header must answer."""
    from safetensors.torch import save_file

    from pv3d_core import io
    from pv3d_core.config import ModelConfig
    from pv3d_core.fit_files import is_portrait

    portrait = io.save_checkpoint(tmp_path / "p.safetensors", ModelConfig(generator=tiny_generator.config,
                                  name="portrait"), {"generator_ema": tiny_generator}, {"kind": "portrait"})
    model = save_generator(tmp_path / "m.safetensors", tiny_generator)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")

    def no_tensors(*_a, **_k):
        raise AssertionError("the whole checkpoint was read")

    monkeypatch.setattr(io, "_read_ours", no_tensors)
    assert io.read_checkpoint_meta(portrait)["kind"] == "portrait"
    assert is_portrait(portrait)
    assert not is_portrait(model)
    for bad in (foreign, garbage, tmp_path / "missing.safetensors"):
        assert not is_portrait(bad)
        with pytest.raises(CheckpointError):
            io.read_checkpoint_meta(bad)

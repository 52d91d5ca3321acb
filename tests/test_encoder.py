"""The portrait encoder (pv3d_core.encoder) and its training (pv3d_core.train.encoder, `pv3d train-encoder`):
sizes, files tied to one generator, learning, exact resume, the command line."""
import json
import time

import pytest
import torch

from pv3d_core.encoder import (EncoderConfig, PortraitEncoder, fingerprint, load_encoder, load_encoder_for,
                               save_encoder)
from pv3d_core.errors import CheckpointError, UsageError
from pv3d_core.paths import encoder_for
from pv3d_core.train.encoder import EncoderTrainConfig, EncoderTrainer, train_encoder
from pv3d_core.train.photo_augment import augment


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory):
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator, save_generator

    torch.manual_seed(3)
    G = build_generator(preset("micro"))
    with torch.no_grad():          # some density, so that renders and opacity are not empty
        for name, p in G.named_parameters():
            if name.endswith(".bias") and p.ndim == 1:
                p.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("micro") / "micro.safetensors"
    save_generator(path, G.eval(), name="micro")
    return path


def _cfg(ckpt, out, **kw):
    base = dict(ckpt=str(ckpt), out=str(out), steps=6, batch=4, fresh=2, pool=16, image_samples=1, warmup=2,
                checkpoint_every=3, eval_every=0, eval_samples=8, seed=1)
    base.update(kw)
    return EncoderTrainConfig(**base)


def test_encoder_sizes_and_speed(tiny_generator):
    enc = PortraitEncoder(EncoderConfig.for_generator(tiny_generator)).eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        out = enc(x)
        assert out["ws"].shape == (1, tiny_generator.num_ws, tiny_generator.w_dim) and out["pose"].shape == (1, 2)
        # the per-layer offsets start at zero: every layer gets the same latent at first
        assert torch.allclose(out["ws"], out["ws"][:, :1].expand_as(out["ws"]))
        enc(torch.rand(1, 3, 512, 512))                  # any crop size: resized to the input resolution
        t0 = time.perf_counter()
        for _ in range(3):
            enc(x)
    assert (time.perf_counter() - t0) / 3 < 0.5          # "well under a second" (about 20 ms unloaded)
    with pytest.raises(ValueError, match="power of two"):
        PortraitEncoder(EncoderConfig(in_resolution=100))


def test_encoder_file_belongs_to_one_generator(tmp_path, tiny_generator, tiny_ckpt):
    from pv3d_core.io import load_generator

    assert encoder_for(tiny_ckpt) == tiny_ckpt.with_name("tiny-encoder.safetensors")
    G = load_generator(tiny_ckpt)
    enc = PortraitEncoder(EncoderConfig.for_generator(G))
    enc.set_latent_stats(torch.full((G.w_dim,), 0.5), 2.0)
    beside = encoder_for(tiny_ckpt)
    try:
        save_encoder(beside, enc, fingerprint(G), {"note": "test"})
        back = load_encoder(beside)
        assert back.meta["note"] == "test" and float(back.encoder.w_spread) == 2.0
        for (k, a), (_, b) in zip(enc.state_dict().items(), back.encoder.state_dict().items()):
            assert torch.equal(a, b), k
        found, note = load_encoder_for(G)                       # found beside the model
        assert found is not None and "tiny-encoder" in note
        # other weights of the same architecture: refused, quietly when looked up, loudly when asked for
        G2 = load_generator(tiny_ckpt)
        with torch.no_grad():
            next(G2.decoder.parameters()).add_(1e-3)
        assert fingerprint(G2) != fingerprint(G)
        G2.checkpoint_path = str(tiny_ckpt)
        none, why = load_encoder_for(G2)
        assert none is None and "other weights" in why
        with pytest.raises(CheckpointError, match="other weights"):
            load_encoder_for(G2, beside)
    finally:
        beside.unlink(missing_ok=True)
    assert load_encoder_for(G)[0] is None
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        load_encoder(bad)


def test_augmentation_is_deterministic_and_changes_the_input():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    a = torch.rand(4, 1, 16, 16)
    y1 = augment(x, a, torch.Generator().manual_seed(0))
    y2 = augment(x, a, torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2) and y1.shape == x.shape and y1.abs().max() <= 1
    assert (y1 - x).abs().mean() > 0.02


@pytest.mark.slow
def test_training_learns_from_the_models_samples(tmp_path):
    """On a trained model (the embedded one), fifty steps start to teach the encoder the camera of a
    held-out sample from its image (measured with one thread: 21.4° -> 18.6° after 30 steps, 13.9° after
    50; a larger learning rate does not learn faster). The latent takes hundreds of steps: the
    benchmark's and the model card's figures."""
    from pv3d_core.paths import default_checkpoint

    tr = EncoderTrainer(_cfg(default_checkpoint(), tmp_path / "e.safetensors", lr=1e-3, batch=8, fresh=2, pool=24,
                             image_samples=0, augment=False, warmup=5))
    tr.fill_pool()
    before = tr.evaluate(tr.enc)
    assert before["eval_psnr"] == pytest.approx(before["eval_psnr_mean_face"])   # it starts at the mean face
    for _ in range(50):
        tr.train_step()
    after = tr.evaluate(tr.enc)
    assert after["eval_pose_deg"] < 0.72 * before["eval_pose_deg"], (before, after)


def test_resume_equals_uninterrupted_and_writes_the_file_only_at_the_end(tmp_path, micro_ckpt):
    import threading

    one = train_encoder(_cfg(micro_ckpt, tmp_path / "one.safetensors"))
    assert one["steps"] == 6 and not one["interrupted"] and (tmp_path / "one.safetensors").is_file()
    stop = threading.Event()

    def prog(step, total, logs):
        if logs.get("stage") != "pool" and step == 4:     # (the first samples are reported too)
            stop.set()
    two = train_encoder(_cfg(micro_ckpt, tmp_path / "two.safetensors"), progress=prog, cancel=stop)
    assert two["interrupted"] and two["steps"] == 4 and not (tmp_path / "two.safetensors").exists()
    assert (tmp_path / "two.run" / "state.safetensors").is_file()
    two = train_encoder(_cfg(micro_ckpt, tmp_path / "two.safetensors"))
    assert two["steps"] == 6 and two["steps_this_run"] == 2
    a, b = load_encoder(tmp_path / "one.safetensors"), load_encoder(tmp_path / "two.safetensors")
    for (k, p), (_, q) in zip(a.encoder.state_dict().items(), b.encoder.state_dict().items()):
        assert torch.equal(p, q), k
    assert a.fingerprint == b.fingerprint and a.meta["steps"] == 6
    lines = [json.loads(x) for x in (tmp_path / "two.run" / "history.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_init_from_another_run_and_a_time_budget_that_writes_the_encoder(tmp_path, micro_ckpt, capsys):
    """--init takes an encoder file or a training run's folder (its averaged encoder: a stopped run has
    no encoder file yet); --write-on-stop writes the encoder when --max-minutes ends the run early."""
    from pv3d_core.cli import main

    stop = __import__("threading").Event()
    stop.set()
    first = train_encoder(_cfg(micro_ckpt, tmp_path / "a.safetensors", steps=2))
    ema = load_encoder(tmp_path / "a.safetensors").encoder.state_dict()
    for init in (tmp_path / "a.run", tmp_path / "a.run" / "state.safetensors", tmp_path / "a.safetensors"):
        tr = EncoderTrainer(_cfg(micro_ckpt, tmp_path / "b.safetensors", init=str(init)))
        assert tr.step == 0 and tr.enc.training
        for k, v in tr.enc.state_dict().items():
            assert torch.equal(v, ema[k]), (init, k)
    assert first["steps"] == 2
    (tmp_path / "empty.run").mkdir()
    with pytest.raises(CheckpointError, match="no encoder training state"):
        EncoderTrainer(_cfg(micro_ckpt, tmp_path / "b.safetensors", init=str(tmp_path / "empty.run")))
    with pytest.raises(CheckpointError, match="not found"):
        EncoderTrainer(_cfg(micro_ckpt, tmp_path / "b.safetensors", init=str(tmp_path / "none.safetensors")))
    # stopped early: no encoder file, unless asked for; the run continues either way
    s = train_encoder(_cfg(micro_ckpt, tmp_path / "c.safetensors", steps=4), cancel=stop)
    assert s["interrupted"] and "encoder" not in s and not (tmp_path / "c.safetensors").exists()
    s = train_encoder(_cfg(micro_ckpt, tmp_path / "c.safetensors", steps=4, write_on_stop=True,
                           init=str(tmp_path / "a.run")), cancel=stop)
    assert s["interrupted"] and load_encoder(s["encoder"]).meta["steps"] == 0
    out = tmp_path / "d.safetensors"
    rc = main(["train-encoder", "--ckpt", str(micro_ckpt), "-o", str(out), "--init", str(tmp_path / "a.run"),
               "--steps", "50", "--batch", "2", "--fresh", "2", "--pool", "8", "--image-samples", "1",
               "--max-minutes", "0.0001", "--write-on-stop", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and "as it is" in text and "run the same command again" in text
    assert "started from the run" in load_encoder(out).meta["init"]


def test_a_run_of_another_model_is_refused(tmp_path, micro_ckpt, tiny_ckpt):
    train_encoder(_cfg(micro_ckpt, tmp_path / "e.safetensors", steps=1))
    with pytest.raises(CheckpointError, match="another model"):
        EncoderTrainer(_cfg(tiny_ckpt, tmp_path / "e.safetensors", steps=1))


def test_cli(tmp_path, micro_ckpt, capsys):
    from pv3d_core.cli import main

    out = tmp_path / "enc.safetensors"
    rc = main(["train-encoder", "--ckpt", str(micro_ckpt), "-o", str(out), "--steps", "2", "--batch", "2",
               "--fresh", "2", "--pool", "8", "--image-samples", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["encoder"] == str(out) and "eval_psnr" in summary
    for bad in (["--steps", "-1"], ["--batch", "0"], ["--lr", "0"], ["-o", str(tmp_path / "e.pt")]):
        args = ["train-encoder", "--ckpt", str(micro_ckpt), "-o", str(tmp_path / "x.safetensors"), *bad]
        assert main(args) == 2
        assert "error" in capsys.readouterr().err
    assert main(["train-encoder", "--ckpt", str(tmp_path / "missing.safetensors"), "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(UsageError):
        _cfg(micro_ckpt, tmp_path / "y.safetensors", image_samples=-1).validate()

"""Teacher distillation (pv3d_core.train.distill): learns, resumes exactly, exports a usable model."""
import pytest
import torch

from pv3d_core.errors import UsageError
from pv3d_core.io import load_generator
from pv3d_core.train.distill import DistillConfig, Distiller, distill


@pytest.fixture(scope="module")
def micro64(tmp_path_factory):
    """The micro preset with a 64-d appearance code (the teacher reads 33 entries; micro has 32)."""
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator, save_generator

    cfg = preset("micro")
    cfg.generator.z_dim = 64
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("micro") / "micro64.safetensors"
    save_generator(path, build_generator(cfg), name="micro64")
    return str(path)


def test_too_small_a_code_is_refused(tmp_path):
    with pytest.raises(UsageError, match="appearance"):
        Distiller(DistillConfig(out=str(tmp_path), init=None, preset="micro"))


def _cfg(out, init, **kw):
    base = dict(out=str(out), init=init, batch=2, ssaa=1, compile_teacher=False, density_reg=0.1,
                checkpoint_every=2, snapshot_every=0, sample_every=0, seed=5)
    base.update(kw)
    return DistillConfig(**base)


def test_loss_falls_on_the_teacher(tmp_path, micro64):
    d = Distiller(_cfg(tmp_path / "a", micro64, lr=3e-3, batch=4))
    first = [d.train_step()["total"] for _ in range(3)]
    for _ in range(10):
        d.train_step()
    last = [d.train_step()["total"] for _ in range(3)]
    assert sum(last) < 0.8 * sum(first)


def test_resume_equals_uninterrupted(tmp_path, micro64):
    s1 = distill(_cfg(tmp_path / "one", micro64, steps=4), progress=None)
    distill(_cfg(tmp_path / "two", micro64, steps=2), progress=None)
    s2 = distill(_cfg(tmp_path / "two", micro64, steps=4), progress=None)
    assert s1["steps"] == s2["steps"] == 4
    a, b = load_generator(s1["model"]), load_generator(s2["model"])
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k


def test_export_fine_tunes_with_pv3d_train(tmp_path, micro64):
    """The exported model holds G and both discriminators, so `pv3d train --init` takes it."""
    from pv3d_core.io import read_checkpoint

    s = distill(_cfg(tmp_path / "r", micro64, steps=1), progress=None)
    ck = read_checkpoint(s["model"])
    assert all(ck.has(p) for p in ("generator", "generator_ema", "img_discriminator", "vid_discriminator"))


def test_adversarial_term_trains_and_resumes_exactly(tmp_path, micro64):
    """With the patch discriminator on, resume is still bit-exact (D and its optimiser are saved)."""
    kw = dict(adv_weight=0.05, adv_start_step=1)
    s1 = distill(_cfg(tmp_path / "one", micro64, steps=4, **kw), progress=None)
    distill(_cfg(tmp_path / "two", micro64, steps=2, **kw), progress=None)
    s2 = distill(_cfg(tmp_path / "two", micro64, steps=4, **kw), progress=None)
    a, b = load_generator(s1["model"]), load_generator(s2["model"])
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k
    import json

    logs = [json.loads(x) for x in (tmp_path / "one" / "history.jsonl").read_text().splitlines()]
    assert "g_adv" not in logs[0] and "d_loss" in logs[1] and "r1" in logs[1]


def test_pv3d_distill_command(tmp_path, micro64, capsys):
    from pv3d_core.cli import main

    out = tmp_path / "run"
    assert main(["distill", "-o", str(out), "--init", micro64, "--steps", "2", "--batch", "2", "--no-compile",
                 "--snapshot-every", "1", "--sample-every", "0", "--checkpoint-every", "1"]) == 0
    assert (out / "model.safetensors").is_file() and len(list((out / "snapshots").glob("*.safetensors"))) == 2
    for bad in (["--steps", "-1"], ["--lr", "nan"], ["--ssaa", "9"], ["--adv-weight", "inf"]):
        assert main(["distill", "-o", str(tmp_path / "bad"), "--init", micro64, *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_free_space_and_occupancy_follow_the_teachers_head(tmp_path, micro64, monkeypatch):
    """Density is penalised where the teacher's head is not (above the head, where no camera looks),
    not inside it or within the margin of its surface; a few steps with the term lower it."""
    from pv3d_core.data import head_codes, heads

    d = Distiller(_cfg(tmp_path / "f", micro64, free_space=1.0, occupancy=0.1, free_space_points=4000, lr=3e-3))
    b = d.draw(2)
    ws = d.mapping(b["z"], b["psi"])
    planes = d.G.planes(ws, b["zm"], b["t"], noise_mode="const")
    hb = head_codes.head_batch(b["z"], b["zm"], b["t"], b["psi"])
    seen = []

    def fake_density(sign):
        def density(planes_, pts):                   # +-30 by the teacher's distance, one head per sample
            n, m, _ = pts.shape
            dist = heads.sdf(pts.reshape(-1, 3), hb.take(torch.arange(n).repeat_interleave(m))).reshape(n, m)
            seen.append(dist)
            return torch.where(dist > 0.02, 30.0 * sign, -30.0 * sign)
        return density

    with monkeypatch.context() as mp:
        mp.setattr(d.G, "density", fake_density(+1))  # dense only outside: counted (softplus(29) = 29)
        fs, occ = d.shape_terms(ws, b, planes)        # and the inside, empty, falls 20 - (-30) short
        assert float(fs) == pytest.approx(29, abs=1e-3) and float(occ) == pytest.approx(50, abs=1e-3)
        mp.setattr(d.G, "density", fake_density(-1))  # dense only inside and at the surface: not counted
        fs, occ = d.shape_terms(ws, b, planes)        # and solid enough inside (30 >= 20)
        assert float(fs) < 1e-6 and float(occ) < 1e-6
    inside = float((seen[0] < 0).float().mean())
    assert 0.05 < inside < 0.6                       # the points fill the box: head and free space
    assert float(seen[0].max()) > 0.3                # including the box's far corners
    with torch.no_grad():
        d.G.decoder.net[-1].bias[0] = 3.0
    before = float(d.shape_terms(ws, b, planes)[0].detach())
    for _ in range(6):
        logs = d.train_step()
    assert "free_space" in logs and "occupancy" in logs
    ws = d.mapping(b["z"], b["psi"])
    after = float(d.shape_terms(ws, b, d.G.planes(ws, b["zm"], b["t"], noise_mode="const"))[0].detach())
    assert after < 0.8 * before


def test_superresolution_only_changes_only_the_superresolution(tmp_path, micro64):
    """--train-only superresolution: every weight outside the super-resolution network is left bit for bit,
    the super-resolution weights move and its loss falls; the state resumes with its one optimiser group."""
    before = load_generator(micro64).state_dict()
    d = Distiller(_cfg(tmp_path / "sr", micro64, lr=3e-3, batch=4, train_only="superresolution"))
    batch = d.draw(4)
    d.draw = lambda n: batch                  # one batch, so the fall is not hidden by new heads
    first = d.train_step()["image"]
    for _ in range(10):
        last = d.train_step()["image"]
    assert last < 0.8 * first
    after = d.G.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(k.startswith("superresolution.") for k in moved), moved
    d.save()
    again = Distiller(_cfg(tmp_path / "sr", micro64, train_only="superresolution"))
    assert again.step == d.step and len(again.opt.param_groups) == 1
    with pytest.raises(UsageError, match="train_only"):
        DistillConfig(train_only="decoder").validate()

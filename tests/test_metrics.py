"""Metrics on inputs with known answers, their clear errors, and `pv3d eval` end to end."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from pv3d_core.metrics import MetricError, chamfer, fvd, geometry, identity, warping
from pv3d_core.render import cameras


# ------------------------------------------------------------------------------------ Fréchet / FVD

def _gauss(rng, n, d, shift=0.0):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a.T + shift


def _scipy_fd(x, y):
    """The textbook formula with scipy's general matrix square root (independent of ours)."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_matches_independent_formula():
    rng = np.random.default_rng(0)
    x, y = _gauss(rng, 3000, 24), _gauss(rng, 2000, 24, shift=0.3) * 1.3
    ours = fvd.fvd_from_features(x, y)
    assert ours == pytest.approx(_scipy_fd(x, y), rel=1e-6)
    assert ours > 1.0


def test_frechet_distance_identical_and_mean_shift():
    rng = np.random.default_rng(1)
    x = _gauss(rng, 4000, 16)
    assert abs(fvd.fvd_from_features(x, x)) < 1e-8
    shift = rng.normal(size=16)
    # same covariance, mean moved by `shift`: the distance is |shift|² exactly
    assert fvd.fvd_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # streaming statistics equal the one-shot ones
    st = fvd.FeatureStats()
    for part in np.array_split(x, 7):
        st.append(part)
    mu, cov = st.mean_cov()
    assert np.allclose(mu, x.mean(0)) and np.allclose(cov, np.cov(x, rowvar=False, bias=True))
    with pytest.raises(MetricError, match="at least 2"):
        fvd.FeatureStats().mean_cov()


def test_i3d_weights_missing_wrong_and_valid(tmp_path):
    with pytest.raises(MetricError, match="i3d_pretrained_400.pt"):
        fvd.load_i3d(tmp_path / "nope.pt")
    with pytest.raises(MetricError, match="pass --i3d"):
        fvd.load_i3d(None)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(MetricError, match="not the standard I3D.*Conv3d_1a_7x7.conv3d.weight"):
        fvd.load_i3d(wrong)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MetricError, match="cannot read"):
        fvd.load_i3d(junk)
    # a file with the standard names and shapes (random values) is accepted and gives 400 logits
    torch.manual_seed(0)
    good = tmp_path / "i3d.pt"
    torch.save(fvd.InceptionI3D().state_dict(), good)
    net = fvd.load_i3d(good)
    clip = np.random.default_rng(0).integers(0, 255, (1, 16, 48, 64, 3), dtype=np.uint8)
    f = fvd.i3d_features(net, clip)
    assert f.shape == (1, 400) and np.isfinite(f).all()


def test_fvd_preprocess_matches_official_recipe():
    v = np.zeros((2, 16, 60, 80, 3), np.uint8)
    v[..., 0] = 255
    x = fvd.preprocess(v)
    assert x.shape == (2, 3, 16, 224, 224)
    assert torch.allclose(x[:, 0], torch.ones(())) and torch.allclose(x[:, 1:], -torch.ones(()))
    with pytest.raises(ValueError):
        fvd.preprocess(np.zeros((16, 60, 80, 3), np.uint8))


# ------------------------------------------------------------------------------------ identity

def test_identity_pair_scores_known_answers():
    e = np.tile(np.array([[1.0, 2.0, 3.0]]), (4, 1))
    s = identity.pair_scores(e)
    assert np.allclose(s["cosine"], 1) and np.allclose(s["distance"], 0)
    e2 = e.copy()
    e2[1] = [-1.0, -2.0, -3.0]             # render 1 opposite: pairs (3,1), (0,1), (2,1) at -1
    s2 = identity.summarise([identity.pair_scores(e2)])
    assert s2["mean_cosine"] == pytest.approx((3 * 1 - 3 * 1) / 6)
    assert s2["mean_cosine_same_view"] == pytest.approx(0.0)
    with pytest.raises(MetricError):
        identity.summarise([])


def test_arcface_errors_and_network_shape(tmp_path):
    with pytest.raises(MetricError, match="model_ir_se50.pth"):
        identity.load_arcface(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"input_layer.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(MetricError, match="not IR-SE50"):
        identity.load_arcface(bad)
    net = identity.IRSE50().eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 112, 112))
    assert y.shape == (2, 512) and torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
    assert len(net.body) == 24 and "output_layer.3.weight" in net.state_dict()


def test_dlib_identity_separates_people():
    """Two synthetic identities, each from two views: dlib's descriptor puts same-person pairs closer."""
    from pv3d_core.data import synth

    e = synth.Expression()
    imgs = []
    for seed in (1, 2):
        ident = synth.Identity.sample(np.random.default_rng(seed))
        for yaw in (0.0, 0.3):
            imgs.append(synth.render_head(ident, e, cameras.OrbitCamera(yaw=yaw).c(), 128, ssaa=1)["image"])
    emb = identity.DlibEmbedder()
    E = emb(np.stack(imgs))
    assert E.shape == (4, 128) and emb.detected == 4
    d = lambda a, b: np.linalg.norm(E[a] - E[b])  # noqa: E731
    assert max(d(0, 1), d(2, 3)) < min(d(0, 2), d(0, 3), d(1, 2), d(1, 3))


# ------------------------------------------------------------------------------------ Chamfer

def test_chamfer_known_shift_and_official_masking():
    g = np.stack(np.meshgrid(*[np.arange(8) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert chamfer.chamfer_distance(g, g) == 0.0
    # every point moved by 0.01 along x on a 0.1 grid: the nearest neighbour is its own image
    assert chamfer.chamfer_distance(g, g + [0.01, 0, 0]) == pytest.approx(2 * 0.01 ** 2)
    assert chamfer.chamfer_distance(g, g + [0.01, 0, 0], reduction="mean") == pytest.approx(2e-4)
    # masks select the query points only; masked-out points still serve as neighbours (official)
    far = np.vstack([g, g[:10] + 5.0])
    mask = np.r_[np.ones(len(g), bool), np.zeros(10, bool)]
    assert chamfer.chamfer_distance(far, far, mask, mask) == 0.0
    shifted = far.copy()
    shifted[:len(g)] += [0.01, 0, 0]
    assert chamfer.chamfer_distance(far, shifted, mask, mask) == pytest.approx(2e-4)
    assert np.isnan(chamfer.chamfer_distance(g, g, np.zeros(len(g), bool)))
    s = chamfer.summarise([[1.0, 2.0, float("nan"), 3.0], [1.0, 1.0, 1.0, 1.0]])
    assert s["sum"] == pytest.approx(10.0) and s["pairs_skipped_empty"] == 1
    assert s["mean_per_pair"] == pytest.approx(10.0 / 7)


def test_depth_points_put_leftover_weight_at_ray_end():
    o = np.zeros((2, 3))
    d = np.array([[0, 0, 1.0], [0, 1.0, 0]])
    p = chamfer.depth_points(o, d, np.array([2.5, 2.5]), np.array([1.0, 0.0]), 3.3)
    assert np.allclose(p, [[0, 0, 2.5], [0, 3.3, 0]])


# ------------------------------------------------------------------------------------ warping

def _plane_scene(c, res, offset=0.0):
    """Analytic render of the textured plane z = 0.1 (facing +z): colours and ray distance."""
    from pv3d_core.render.rays import pixel_rays, split_camera

    o, d = pixel_rays(*split_camera(torch.from_numpy(np.asarray(c, np.float32))[None]), res)
    o, d = o[0].double().numpy(), d[0].double().numpy()
    t = (0.1 - o[:, 2]) / d[:, 2]
    p = o + d * t[:, None]
    col = np.stack([128 + 100 * np.sin(6 * p[:, 0]), 128 + 100 * np.cos(5 * p[:, 1]),
                    128 + 60 * np.sin(4 * (p[:, 0] + p[:, 1]))], -1)
    return col.reshape(res, res, 3).astype(np.float32), (t + offset).reshape(res, res).astype(np.float32)


def test_warping_error_zero_for_identical_views_and_planted_error():
    front = cameras.frontal()
    img, depth = _plane_scene(front, 64)
    for official in (True, False):
        assert warping.pair_error(front, front, img, img, depth, size=64, official=official) == (0.0, 0.0)
    planted = img.copy()
    planted[10:20, 30:40] += 40.0
    mean, median = warping.pair_error(front, front, img, planted, depth, size=64)
    assert mean == pytest.approx(40.0 * 100 / (64 * 64)) and median == 0.0


def test_warping_error_small_for_true_geometry_large_for_wrong_depth():
    """A real 30° side view of a textured plane: warping with the true depth nearly reproduces the
    frontal image; the same warp with depth 0.1 too far does not."""
    from pv3d_core.metrics.evaluate import side_camera

    front, side = cameras.CONDITIONING_CAMERA, side_camera(30.0, 0.0)
    f_img, _ = _plane_scene(front, 256)
    s_img, s_depth = _plane_scene(side, 256)
    good, _ = warping.pair_error(front, side, f_img, s_img, s_depth[::4, ::4], size=256, official=False)
    _, wrong_depth = _plane_scene(side, 256, offset=0.1)
    bad, _ = warping.pair_error(front, side, f_img, s_img, wrong_depth[::4, ::4], size=256, official=False)
    assert good < 1.0 and bad > 5.0, (good, bad)   # measured 0.25 and 9.7


# ------------------------------------------------------------------------------------ geometry

def test_depth_error_planted_offset():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.4, 2.8, (32, 32)).astype(np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 4:28] = 1
    gt[mask == 0] = 0
    pred = np.where(mask > 0, gt + 0.05, 3.3)
    alpha = mask.copy()
    alpha[8:12] = 0                                     # a quarter of the silhouette missing
    e = geometry.depth_error(pred, gt, mask, alpha)
    assert e["mean_abs"] == pytest.approx(0.05, abs=1e-6) and e["rmse"] == pytest.approx(0.05, abs=1e-6)
    assert e["pixels"] == 16 * 24 and e["silhouette_iou"] == pytest.approx(0.75)
    assert geometry.depth_error(gt, gt, mask)["mean_abs"] == 0.0
    with pytest.raises(MetricError, match="no foreground"):
        geometry.depth_error(gt, gt, np.zeros_like(mask))


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    import json as _json

    from pv3d_core.data import layout, synth

    root = tmp_path_factory.mktemp("synth")
    synth.synthesize_clip(root, 0, n_frames=3, res=32, seed=0, meshes=False)
    layout.write_list(root, [synth.clip_name(0)])
    (root / "groundtruth" / "depth.json").write_text(_json.dumps({"kind": "distance"}))
    return root


def test_geometry_clear_errors(tmp_path, synth_data):
    with pytest.raises(MetricError, match="not found"):
        geometry.groundtruth_clips(tmp_path / "none")
    with pytest.raises(MetricError, match="pv3d data synth"):
        geometry.groundtruth_clips(tmp_path)
    (tmp_path / "groundtruth").mkdir()
    with pytest.raises(MetricError, match="no <clip>.npz"):
        geometry.groundtruth_clips(tmp_path)
    (tmp_path / "groundtruth" / "depth.json").write_text('{"kind": "z"}')
    with pytest.raises(MetricError, match="expects 'distance'"):
        geometry.groundtruth_clips(tmp_path)
    clip = geometry.load_clip(synth_data, geometry.groundtruth_clips(synth_data)[0])
    assert clip["frames"].shape[0] == clip["depth"].shape[0] == clip["cameras"].shape[0] == 3
    assert (clip["depth"][clip["mask"] > 0.5] > 2).all()


def test_eval_cli_end_to_end_and_errors(tiny_ckpt, synth_data, tmp_path, capsys):
    from pv3d_core.cli import main

    out = tmp_path / "r" / "report.json"
    rc = main(["eval", "--ckpt", str(tiny_ckpt), "--videos", "1", "--data", str(synth_data), "--geo-clips", "1",
               "--geo-steps", "2", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["identity"]["backbone"] == "dlib-resnet128" and rep["chamfer"]["videos"] == 1
    # the report holds the metrics of the protocol's renders: recompute them from those renders
    from pv3d_core.io import load_generator
    from pv3d_core.metrics.evaluate import multiview_renders

    v = next(multiview_renders(load_generator(tiny_ckpt), 1, seed=0, psi=1.0, yaw=30.0, pitch=0.0))
    ident = identity.summarise([identity.pair_scores(identity.DlibEmbedder()(v["images"]))])
    assert rep["identity"]["mean_cosine"] == pytest.approx(ident["mean_cosine"], abs=1e-9)
    warp = warping.summarise([warping.video_errors(v["images"], v["depth"], *v["cameras"], 256)])
    assert rep["warping"]["pairs_scored"] == warp["pairs_scored"] >= 1
    assert rep["warping"]["mean_abs_error"] == pytest.approx(warp["mean_abs_error"], abs=1e-9)
    assert rep["chamfer"]["sum"] == pytest.approx(chamfer.summarise([chamfer.video_chamfer(v["points"], v["alpha"])])["sum"],
                                                  abs=1e-12, nan_ok=True)
    assert "i3d" in rep["fvd"]["skipped"].lower()
    g = rep["geometry"]
    assert g["clips"] == 1 and np.isfinite(g["input_view"]["mean_abs"]) and 0 <= g["input_view"]["silhouette_iou"] <= 1
    assert rep["settings"]["side_camera"]["yaw_deg"] == 30.0 and rep["settings"]["videos"] == 1
    assert out.with_suffix(".png").stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json", "report.png"]
    capsys.readouterr()
    # clear errors, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra, msg in ((["--data", str(empty)], "not a PV3D dataset"),
                       (["--i3d", str(tmp_path / "i3d.pt")], "I3D weights not found"),
                       (["--arcface", str(tmp_path / "a.pth")], "ArcFace weights not found")):
        bad = tmp_path / "bad.json"
        assert main(["eval", "--ckpt", str(tiny_ckpt), "--videos", "1", *extra, "-o", str(bad)]) == 2
        assert msg in capsys.readouterr().err
        assert not bad.exists()


class _StubI3D(torch.nn.Module):
    """Stands in for I3D (whose weights are not here): a fixed projection of per-clip colour statistics."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 5)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):                                   # (N, 3, T, 224, 224)
        return self.proj(torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4))], 1))


def test_fvd_pipeline_counts_and_short_clips(tiny_generator, synth_data, tmp_path, monkeypatch):
    from pv3d_core.data import layout
    from pv3d_core.metrics import evaluate
    from pv3d_core.metrics.evaluate import compute_fvd

    with pytest.raises(MetricError, match="at least 16 frames"):
        compute_fvd(tiny_generator, synth_data, _StubI3D(), 2)
    monkeypatch.setattr(evaluate, "NUM_TIMES", 4)         # 16 renders per clip are too slow for a CPU test
    rng = np.random.default_rng(0)
    cams = cameras.camera_path("yaw", 6)
    for i in range(3):
        layout.write_clip(tmp_path, f"c{i}", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), cams)
    layout.write_list(tmp_path, [f"c{i}" for i in range(3)])
    r = compute_fvd(tiny_generator, tmp_path, _StubI3D(), 2, seed=0)
    assert r["real_videos"] == 2 and r["generated_videos"] == 2 and r["frames"] == 4
    assert np.isfinite(r["fvd"]) and r["fvd"] > 0

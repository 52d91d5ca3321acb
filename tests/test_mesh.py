"""Mesh export: silhouette agrees with the renderer, PLY with colours loads, errors are clear."""
import threading

import numpy as np
import pytest
import torch

from pv3d_core import mesh
from pv3d_core.export import Cancelled, ExportError
from pv3d_core.paths import default_checkpoint
from pv3d_core.render import cameras


@pytest.fixture(scope="module")
def default_model():
    path = default_checkpoint()
    if not path.is_file():
        pytest.skip(f"the embedded default model {path} is missing")
    from pv3d_core.io import load_generator
    from pv3d_core.pipeline import FrameRenderer

    G = load_generator(path)
    r = FrameRenderer(G)
    ws, zm = r.ws_for(1, 0.7), r.motion_for(2)
    planes = G.planes(ws, zm, torch.tensor([0.5]), noise_mode="const")
    m = mesh.extract_mesh(G, ws, zm, 0.5, resolution=128, planes=planes)
    return G, r, ws, zm, planes, m


def _project(verts, c, res):
    cam2world = c[:16].reshape(4, 4)
    k = c[16:].reshape(3, 3)
    w2c = np.linalg.inv(cam2world)
    p = verts @ w2c[:3, :3].T + w2c[:3, 3]
    uv = p[:, :2] / p[:, 2:3] * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]])
    return np.floor(uv * res).astype(int)


def test_mesh_silhouette_matches_rendered_alpha(default_model):
    """Sample the mesh surface densely, splat into the frontal camera's pixels, compare with the
    renderer's accumulated opacity (> 0.5) at 64². The two differ only along the boundary (the
    volume's soft edge vs the iso-surface, and pixel quantisation), which at 64² is a few percent
    of the area, so IoU > 0.85 separates a correct mesh from a shifted, mirrored or scaled one."""
    import trimesh

    G, r, ws, zm, planes, m = default_model
    res = 64
    c = cameras.frontal()
    out = G.render_planes(planes, ws, torch.from_numpy(c)[None], neural_rendering_resolution=res)
    alpha = out["image_alpha"][0, 0].numpy() > 0.5
    pts, _ = trimesh.sample.sample_surface(m, 300_000, seed=0)
    ij = _project(np.asarray(pts), c, res)
    ok = (ij >= 0).all(1) & (ij < res).all(1)
    sil = np.zeros((res, res), bool)
    sil[ij[ok, 1], ij[ok, 0]] = True
    iou = (sil & alpha).sum() / max((sil | alpha).sum(), 1)
    assert alpha.mean() > 0.1, "the default model renders no head"
    assert iou > 0.85, f"IoU {iou:.3f}"
    # a mirrored mesh must not pass: the test can fail
    mirrored = np.asarray(pts) * np.array([1, -1, 1])
    ij = _project(mirrored, c, res)
    ok = (ij >= 0).all(1) & (ij < res).all(1)
    bad = np.zeros((res, res), bool)
    bad[ij[ok, 1], ij[ok, 0]] = True
    assert (bad & alpha).sum() / max((bad | alpha).sum(), 1) < iou - 0.1


def test_ply_roundtrip_with_colours(default_model, tmp_path):
    import trimesh

    G, r, ws, zm, planes, m = default_model
    p = mesh.write_ply(tmp_path / "head.ply", m)
    back = trimesh.load(p)
    assert len(back.faces) == len(m.faces) > 1000
    cols = np.asarray(back.visual.vertex_colors)
    assert cols.shape == (len(back.vertices), 4) and cols[:, :3].std() > 5
    # world frame: inside the tri-plane box, the head's top above its chin (+Y up), face towards +Z
    lo, hi = back.bounds
    assert lo.min() >= -0.51 and hi.max() <= 0.51
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".head*"))


def test_cancel_and_clear_errors(tiny_generator, tmp_path):
    G = tiny_generator
    ws = G.mapping(torch.randn(1, G.z_dim), torch.from_numpy(cameras.frontal())[None])
    zm = torch.randn(1, G.motion_dim)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        mesh.extract_mesh(G, ws, zm, 0.0, resolution=32, cancel=ev)
    with pytest.raises(ValueError, match="no surface at density level"):
        mesh.extract_mesh(G, ws, zm, 0.0, resolution=32, level=1e6)
    with pytest.raises(ValueError, match="grid resolution"):
        mesh.density_grid(G, G.planes(ws, zm, torch.tensor([0.0])), resolution=4)
    import trimesh

    box = trimesh.creation.box()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExportError):
        mesh.write_ply(f / "sub" / "m.ply", box)


def test_mesh_cli(tiny_ckpt, tmp_path, capsys):
    from pv3d_core.cli import main

    # random weights have no surface at the default level: a clear one-line error, nothing written
    assert main(["mesh", "--ckpt", str(tiny_ckpt), "--res", "32", "-o", str(tmp_path / "m.ply")]) == 2
    assert "no surface" in capsys.readouterr().err
    assert not (tmp_path / "m.ply").exists()
    lv = mesh.density_grid  # the level that does cut this random model: its median density
    from pv3d_core.io import load_generator
    from pv3d_core.pipeline import FrameRenderer

    G = load_generator(tiny_ckpt)
    r = FrameRenderer(G)
    g, _ = lv(G, G.planes(r.ws_for(0, 0.7), r.motion_for(0), torch.tensor([0.0])), 32)
    level = float(np.median(g))
    assert main(["mesh", "--ckpt", str(tiny_ckpt), "--res", "32", "--level", str(level), "--frames", "2",
                 "-o", str(tmp_path / "m.ply")]) == 0
    assert (tmp_path / "m_0000.ply").exists() and (tmp_path / "m_0001.ply").exists()

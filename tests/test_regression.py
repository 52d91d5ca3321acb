"""The regression loss shared by the warm start and the distillation (foundations bug 1)."""
import numpy as np
import pytest
import torch

from pv3d_core.train.regression import RegressionWeights, frame_loss, masked_resize


def _out(depth_raw, alpha_raw, img):
    return {"image": img, "image_raw": torch.nn.functional.interpolate(img, size=depth_raw.shape[-1], mode="area"),
            "image_depth": depth_raw, "image_alpha": alpha_raw}


def test_depth_loss_uses_only_fully_covered_pixels():
    """A head covering the left half: depth 2.5 there, background 0. A prediction that is right wherever
    the head covers the pixel entirely has zero depth loss, whatever it says at the partly covered edge."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :7] = 1
    mask[..., :, 7] = 0.4                         # a partly covered column
    depth = torch.where(mask > 0, torch.full_like(mask, 2.5), torch.zeros_like(mask))
    d_raw, m_raw = masked_resize(depth, mask, 8)
    assert torch.allclose(d_raw[m_raw > 0], torch.full_like(d_raw[m_raw > 0], 2.5))   # not pulled to 0
    pred_depth = torch.where(m_raw > 0.99, d_raw, torch.full_like(d_raw, 0.3))     # wrong on the edge only
    img = torch.zeros(1, 3, 16, 16)
    _, logs = frame_loss(_out(pred_depth, m_raw, img), img, mask, depth, RegressionWeights(gradient=0))
    assert logs["depth"] == pytest.approx(0.0, abs=1e-6)


def test_eight_bit_masks_are_refused():
    img = torch.zeros(1, 3, 8, 8)
    mask = torch.full((1, 1, 8, 8), 255.0)
    with pytest.raises(ValueError, match="coverage"):
        frame_loss(_out(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), img), img, mask)


def test_warm_start_reads_masks_as_coverage(tmp_path):
    """`pv3d data synth` stores masks as uint8 0..255; the warm start must see 0..1 (it used 0..255)."""
    from pv3d_core.data import synth
    from pv3d_core.train.recon import ClipBank

    synth.synthesize_dataset(tmp_path, n_clips=1, n_frames=2, res=32, seed=3, workers=1, progress=False,
                             meshes=False)
    bank = ClipBank(tmp_path, 32)
    m = bank.mask[0]
    assert m is not None and float(m.max()) == 1.0 and float(m.min()) == 0.0
    assert bool(((m > 0) & (m < 1)).any())        # antialiased edges are fractional coverage
    stored = np.load(tmp_path / "groundtruth" / "synth_00000.npz")["mask"]
    assert stored.dtype == np.uint8 and np.allclose(m.numpy(), stored / 255.0)


def test_gradient_term_prefers_sharp_over_blurred():
    torch.manual_seed(0)
    target = (torch.rand(1, 3, 32, 32) > 0.5).float() * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(target, 3, 1, 1)
    w = RegressionWeights(image=0, gradient=1, raw=0, mask=0, depth=0)
    out = lambda x: {"image": x, "image_raw": x[..., ::4, ::4]}  # noqa: E731
    sharp_shifted = torch.roll(target, 0, -1)
    assert frame_loss(out(sharp_shifted), target, weights=w)[1]["gradient"] < \
        frame_loss(out(blurred), target, weights=w)[1]["gradient"]

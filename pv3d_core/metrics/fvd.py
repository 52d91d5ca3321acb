"""Fréchet Video Distance: Kinetics-400 I3D logits of 16-frame clips, Fréchet distance of Gaussians.

As the official evaluation computes it (``frechet_video_distance`` in the PV3D code, after VideoGPT):

- network: Inception-I3D (Carreira & Zisserman) with 400 Kinetics classes, the weights VideoGPT
  converted from the TensorFlow release (``i3d_pretrained_400.pt``). The feature of a clip is the
  network's logits (400), averaged over the remaining time steps. StyleGAN-V's FVD uses a different
  TorchScript I3D file and gives different numbers; we do not load it and say so when given one.
- input: uint8 clips (T = 16 frames) scaled to [0, 1], the shorter side resized to 224 (bilinear,
  align_corners False), centre-cropped to 224², shifted by -0.5 and doubled, i.e. [-1, 1].
- statistics: mean and the biased covariance (1/N) of the features in float64.
- distance: |mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^1/2).

The weights cannot be downloaded here: the user passes the file; :func:`load_i3d` validates it
(a PyTorch state dict or safetensors file whose names and shapes are exactly the network's) and
names what is expected when it is missing or wrong.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import MetricError

I3D_EXPECTED = ("the standard Kinetics-400 Inception-I3D weights as VideoGPT/PV3D use them "
                "(i3d_pretrained_400.pt: a PyTorch state dict with keys such as "
                "'Conv3d_1a_7x7.conv3d.weight' and 'logits.conv3d.weight' of shape (400, 1024, 1, 1, 1))")


# ------------------------------------------------------------------------------------ Fréchet distance

def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    The trace of (S1 S2)^1/2 is computed as the trace of the symmetric (S1^1/2 S2 S1^1/2)^1/2,
    whose eigenvalues are real and non-negative (clipped at 0 against round-off), so the result is
    real without discarding an imaginary part.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).reshape(-1), np.asarray(mu2, np.float64).reshape(-1)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricError(f"Fréchet distance needs matching shapes, got means {mu1.shape}, {mu2.shape} and "
                          f"covariances {s1.shape}, {s2.shape}")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all() and np.isfinite(s1).all() and np.isfinite(s2).all()):
        raise MetricError("Fréchet distance of non-finite statistics")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    lam, vec = np.linalg.eigh(s1)
    root1 = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


class FeatureStats:
    """Running mean and (biased) covariance of feature vectors, in float64."""

    def __init__(self):
        self.n = 0
        self.sum = None
        self.outer = None

    def append(self, feats) -> None:
        x = np.asarray(feats, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got {x.shape}")
        if self.sum is None:
            self.sum = np.zeros(x.shape[1])
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        self.n += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self):
        if self.n < 2:
            raise MetricError(f"Fréchet statistics need at least 2 samples, got {self.n}")
        mu = self.sum / self.n
        return mu, self.outer / self.n - np.outer(mu, mu)


def fvd_from_features(real, fake) -> float:
    a, b = FeatureStats(), FeatureStats()
    a.append(real)
    b.append(fake)
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


# ------------------------------------------------------------------------------------ I3D

def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) of one dimension."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _pad_same(x, kernel, stride):
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(n, k, s) for n, k, s in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d with TF-'SAME' padding, optional batch norm (eps 1e-5), optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn: bool = True,
                 relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001) if bn else None

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | maxpool 3 -> 1x1, concatenated."""

    def __init__(self, cin: int, c: tuple):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = {  # name: (input channels, branch widths)
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3D(nn.Module):
    """Inception-v1 I3D; module names match the common PyTorch port so its state dict loads strictly.

    Input (N, 3, T, 224, 224) in [-1, 1] with T >= 9 (16 in FVD); output the class logits (N, classes)
    averaged over the remaining time steps.
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = Mixed(*_MIXED["Mixed_3b"])
        self.Mixed_3c = Mixed(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, Mixed(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = Mixed(*_MIXED["Mixed_5b"])
        self.Mixed_5c = Mixed(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)

    def forward(self, x):
        for m in list(self.children())[:-1]:
            x = m(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)          # dropout: identity at inference
        return self.logits(x).flatten(3).squeeze(3).mean(2)


def load_i3d(path, device="cpu") -> InceptionI3D:
    """The I3D network with the user's weights, validated; MetricError names what is expected."""
    if path is None:
        raise MetricError(f"FVD needs {I3D_EXPECTED}; they cannot be downloaded here: pass --i3d FILE")
    p = Path(path)
    if not p.is_file():
        raise MetricError(f"I3D weights not found at {p}: FVD needs {I3D_EXPECTED}")
    state = _read_state(p)
    net = InceptionI3D(400)
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(want[k].shape)})" for k in want
             if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]})")
        raise MetricError(f"{p} is not the standard I3D: {'; '.join(parts)}. Expected {I3D_EXPECTED}")
    net.load_state_dict({k: state[k].float() for k in want})
    return net.eval().requires_grad_(False).to(device)


def _read_state(p: Path) -> dict:
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise MetricError(f"cannot read {p} as safetensors: {str(e).splitlines()[0]}") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        import zipfile

        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                    raise MetricError(f"{p} is a TorchScript program (StyleGAN-V's I3D is one), a different "
                                      f"network from the official FVD's; expected {I3D_EXPECTED}") from None
        raise MetricError(f"cannot read {p} as a PyTorch state dict ({str(e).splitlines()[0][:120]}); "
                          f"expected {I3D_EXPECTED}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MetricError(f"{p} does not hold a state dict of tensors; expected {I3D_EXPECTED}")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preprocess(videos, resolution: int = 224) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> (N, 3, T, 224, 224) in [-1, 1], as the official FVD prepares them."""
    v = torch.as_tensor(np.asarray(videos))
    if v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"videos must be (N, T, H, W, 3) uint8, got {tuple(v.shape)}")
    n, t, h, w, _ = v.shape
    x = v.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (x.shape[2] - resolution) // 2, (x.shape[3] - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]
    x = x.reshape(n, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4)
    return (x - 0.5) * 2


@torch.no_grad()
def i3d_features(net: InceptionI3D, videos, batch: int = 4) -> np.ndarray:
    """(N, 400) I3D logits of uint8 clips (N, T, H, W, 3)."""
    dev = next(net.parameters()).device
    out = []
    for s in range(0, len(videos), batch):
        out.append(net(preprocess(videos[s:s + batch]).to(dev)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 400))

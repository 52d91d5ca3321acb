"""Multi-view identity consistency: face embeddings of four renders of one identity, compared in pairs.

The official protocol (``identity_distance/script.py``): per video, four renders of one appearance
and motion code: 0 = frontal at t_a, 1 = side at t_b, 2 = side at t_a, 3 = frontal at t_b (see
:mod:`.evaluate`). Score = mean cosine similarity of the embeddings over the six pairs
(0, 2), (3, 1) [same time, other view], (0, 1), (3, 2) [other time and view], (0, 3), (2, 1)
[same view, other time], averaged over all videos. Higher is more consistent.

Two backbones, always named in the report:

- ``arcface-ir_se50`` (the official choice): InsightFace IR-SE50 (TreB1eN's PyTorch port,
  ``model_ir_se50.pth``) with the user's weights. As the official script: the whole render resized to
  112² (bilinear, align_corners False), scaled to [-1, 1], no face crop or alignment; the embedding
  is l2-normalised.
- ``dlib-resnet128`` (our offline default): dlib's 128-D face descriptor (``face_recognition_models``,
  shipped with the package). dlib needs an aligned face chip: :func:`pv3d_core.faces.detect.detect_boxes`
  finds the face (HOG, then the CNN detector); when neither finds one (odd renders of an untrained
  model) the central 70% of the image is used as the box,
  and the count of detected faces is reported. The 5-point landmarks align the chip. Besides the
  cosine similarity the report gives the mean Euclidean distance, dlib's native measure (same person
  below about 0.6).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import MetricError

PAIRS = ((0, 2), (3, 1), (0, 1), (3, 2), (0, 3), (2, 1))
ARCFACE_EXPECTED = ("ArcFace IR-SE50 weights (model_ir_se50.pth from TreB1eN/InsightFace_Pytorch, the file "
                    "the official evaluation uses: a PyTorch state dict with keys such as "
                    "'input_layer.0.weight' and 'output_layer.3.weight' of shape (512, 25088))")


# ------------------------------------------------------------------------------------ scores

def pair_scores(emb: np.ndarray) -> dict:
    """Scores of one video's four embeddings (4, D): cosine per pair, and Euclidean distances."""
    e = np.asarray(emb, np.float64)
    if e.shape[0] != 4:
        raise ValueError(f"identity consistency compares 4 renders per video, got {e.shape[0]}")
    u = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    cos = [float(u[a] @ u[b]) for a, b in PAIRS]
    dist = [float(np.linalg.norm(e[a] - e[b])) for a, b in PAIRS]
    return {"cosine": cos, "distance": dist}


def summarise(per_video: list[dict]) -> dict:
    if not per_video:
        raise MetricError("identity consistency: no videos were scored")
    cos = np.array([v["cosine"] for v in per_video])
    dist = np.array([v["distance"] for v in per_video])
    return {"mean_cosine": float(cos.mean()),
            "mean_cosine_same_time": float(cos[:, :2].mean()),
            "mean_cosine_cross_time_and_view": float(cos[:, 2:4].mean()),
            "mean_cosine_same_view": float(cos[:, 4:].mean()),
            "mean_distance": float(dist.mean()),
            "videos": len(per_video), "pairs": [list(p) for p in PAIRS]}


# ------------------------------------------------------------------------------------ ArcFace IR-SE50

class _SE(nn.Module):
    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(ch, ch // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(ch // reduction, ch, 1, bias=False)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class _BottleneckIRSE(nn.Module):
    def __init__(self, cin: int, depth: int, stride: int):
        super().__init__()
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), _SE(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 for 112² inputs in [-1, 1] -> l2-normalised 512-D embeddings."""

    STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for cin, depth, n in self.STAGES:
            units.append(_BottleneckIRSE(cin, depth, 2))
            units += [_BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x):
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def load_arcface(path, device="cpu") -> IRSE50:
    """IR-SE50 with the user's weights, validated; MetricError names what is expected."""
    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise MetricError(f"ArcFace weights not found{' at ' + str(p) if p else ''}: the official identity "
                          f"metric needs {ARCFACE_EXPECTED}; pass --arcface FILE (dlib's offline embedding is "
                          f"used otherwise)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricError(f"cannot read {p} as a PyTorch state dict ({str(e).splitlines()[0][:120]}); "
                          f"expected {ARCFACE_EXPECTED}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricError(f"{p} does not hold a state dict of tensors; expected {ARCFACE_EXPECTED}")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    net = IRSE50()
    want = net.state_dict()
    bad = [k for k in want if k not in state or tuple(state[k].shape) != tuple(want[k].shape)]
    extra = [k for k in state if k not in want]
    if bad or extra:
        what = f"missing or mis-shaped {bad[0]}" if bad else f"unexpected {extra[0]}"
        raise MetricError(f"{p} is not IR-SE50 ({len(bad)} missing/mis-shaped, {len(extra)} unexpected "
                          f"tensors; {what}); expected {ARCFACE_EXPECTED}")
    net.load_state_dict({k: state[k].float() for k in want})
    return net.eval().requires_grad_(False).to(device)


class ArcFaceEmbedder:
    name = "arcface-ir_se50"

    def __init__(self, path, device="cpu"):
        self.net = load_arcface(path, device)
        self.device = torch.device(device)
        self.detected = 0
        self.images = 0

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> (N, 512)."""
        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float().to(self.device)
        x = F.interpolate(x, size=112, mode="bilinear", align_corners=False) / 127.5 - 1.0
        self.images += len(x)
        return self.net(x).double().cpu().numpy()


# ------------------------------------------------------------------------------------ dlib

class DlibEmbedder:
    name = "dlib-resnet128"

    def __init__(self):
        from ..faces import models

        try:
            self.shape = models.shape_predictor5()
            self.encoder = models.recognizer()
        except RuntimeError as e:
            raise MetricError(f"dlib's face embedding needs dlib and face-recognition-models ({e}); "
                              f"install the project's dependencies or pass --arcface FILE") from None
        import dlib

        self.dlib = dlib
        self.detected = 0
        self.images = 0

    def box(self, img: np.ndarray):
        from ..faces.detect import box_to_rect, detect_boxes

        h, w = img.shape[:2]
        found = detect_boxes(img)
        self.images += 1
        if found:
            self.detected += 1
            box, _, _ = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
            return box_to_rect(box)
        return self.dlib.rectangle(int(0.15 * w), int(0.15 * h), int(0.85 * w), int(0.85 * h))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for img in np.asarray(images):
            img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
            shape = self.shape(img, self.box(img))
            out.append(np.asarray(self.encoder.compute_face_descriptor(img, shape), np.float64))
        return np.stack(out)


def embedder(arcface_path=None, device="cpu"):
    """ArcFace when its weights are given (the official choice), else dlib (offline)."""
    return ArcFaceEmbedder(arcface_path, device) if arcface_path else DlibEmbedder()

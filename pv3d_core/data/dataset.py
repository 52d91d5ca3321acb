"""One clip-pair loader for every data source (official layout): the official sparse two-frame sampling.

Per clip (as the official VoxCeleb loader draws it): a 16-frame window at a random offset
(``randint(max(1, T - 16 - 1))``), two frame indices ``int(Beta(2, 1) * 16)`` and ``int(Beta(1, 2) * 16)``,
sorted, timestamps ``index / 15``; the two frames and their cameras; with probability 0.5 both frames
flipped horizontally and both cameras mirrored; frames resized to the training resolution and scaled
to [-1, 1].

Sampling takes an explicit ``numpy.random.Generator`` so a training run can save and restore the data
position exactly.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..render import cameras
from . import layout

WINDOW = 16


def sample_pair_indices(rng: np.random.Generator, n_frames: int, window: int = WINDOW):
    """(frame index 1, frame index 2, t1, t2) as the official loader draws them."""
    offset = int(rng.integers(max(1, n_frames - window - 1)))
    a = int(rng.beta(2, 1) * window)
    b = int(rng.beta(1, 2) * window)
    lo, hi = min(a, b), max(a, b)
    i1, i2 = min(offset + lo, n_frames - 1), min(offset + hi, n_frames - 1)
    return i1, i2, lo / (window - 1), hi / (window - 1)


@dataclass
class ClipPair:
    frames: torch.Tensor    # (2, 3, R, R) float32 in [-1, 1]
    cameras: torch.Tensor   # (2, 25)
    t: torch.Tensor         # (2,)
    clip: int
    indices: tuple
    flipped: bool


class ClipDataset:
    """Clips of a dataset folder (official layout), decoded lazily and kept in a bounded cache."""

    def __init__(self, root, resolution: int, window: int = WINDOW, flip_prob: float = 0.5,
                 cache_clips: int = 512):
        self.root = Path(root)
        self.names = layout.list_clips(self.root)   # DatasetError on a bad folder
        self.resolution = int(resolution)
        self.window = window
        self.flip_prob = flip_prob
        self.cameras = [layout.read_cameras(self.root / layout.CAMERA_DIR / f"{n}.json") for n in self.names]
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_size = cache_clips

    def __len__(self) -> int:
        return len(self.names)

    def frames(self, i: int) -> torch.Tensor:
        """All frames of clip i as uint8 (T, 3, R, R), resized to the training resolution."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        v = layout.read_video(self.root / layout.VIDEO_DIR / f"{self.names[i]}.mp4")
        x = torch.from_numpy(v).permute(0, 3, 1, 2)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x.float(), size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=True).round().clamp(0, 255).to(torch.uint8)
        self._cache[i] = x
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return x

    def sample(self, i: int, rng: np.random.Generator) -> ClipPair:
        x = self.frames(i)
        cams = self.cameras[i]
        n = min(len(x), len(cams))
        i1, i2, t1, t2 = sample_pair_indices(rng, n, self.window)
        fr = x[[i1, i2]].float() / 127.5 - 1
        c = np.stack([cams[i1], cams[i2]])
        flip = bool(rng.random() < self.flip_prob)
        if flip:
            fr = fr.flip(-1)
            c = np.stack([cameras.mirror(ci) for ci in c])
        return ClipPair(fr, torch.from_numpy(np.asarray(c, np.float32)), torch.tensor([t1, t2]), i, (i1, i2), flip)

    def batch(self, n: int, rng: np.random.Generator, clips=None):
        """n clip pairs stacked: frames (2n, 3, R, R) clip-major, cameras (2n, 25), t (n, 2)."""
        clips = rng.integers(len(self), size=n) if clips is None else clips
        pairs = [self.sample(int(i), rng) for i in clips]
        return (torch.cat([p.frames for p in pairs]), torch.cat([p.cameras for p in pairs]),
                torch.stack([p.t for p in pairs]))

    def random_cameras(self, n: int, rng: np.random.Generator):
        """Camera pairs (2n, 25) and timestamps (n, 2) of random real clips: the generator's poses."""
        cs, ts = [], []
        for i in rng.integers(len(self), size=n):
            cams = self.cameras[int(i)]
            i1, i2, t1, t2 = sample_pair_indices(rng, len(cams), self.window)
            c = np.stack([cams[i1], cams[i2]])
            if rng.random() < self.flip_prob:
                c = np.stack([cameras.mirror(ci) for ci in c])
            cs.append(c)
            ts.append((t1, t2))
        return torch.from_numpy(np.concatenate(cs).astype(np.float32)), torch.tensor(ts, dtype=torch.float32)

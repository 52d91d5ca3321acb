"""EG3D's OSG decoder: tri-plane features (averaged over the three planes) -> density and colour features.

A two-layer MLP, FC (plane channels -> hidden) -> softplus -> FC (hidden -> 1 + features). The first
output is the raw density σ (the renderer applies softplus(σ - 1)); the others, through a sigmoid
scaled to (-0.001, 1.001), are the colour features. Module names follow the official decoder so
state dicts load strictly.

Its users reach it through methods, not through its layers: the renderer calls it (``forward``), mesh
extraction asks for the density alone (:meth:`sigma`), and the CUDA kernels, which evaluate this exact
MLP, take its gain-applied weights packed in their layout (:meth:`packed_parameters`) after checking
:meth:`kernel_layout`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.layers import FullyConnectedLayer


class OSGDecoder(nn.Module):
    def __init__(self, n_features: int, decoder_lr_mul: float = 1.0, output_dim: int = 32, hidden_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=decoder_lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=decoder_lr_mul),
        )
        self._packed: tuple | None = None        # (key, packed tensor) of packed_parameters

    def forward(self, sampled_features, ray_directions=None) -> dict:
        """Features (N, 3, M, C) sampled from the planes -> dict(rgb (N, M, F), sigma (N, M, 1))."""
        x = sampled_features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return {"rgb": rgb, "sigma": x[..., 0:1]}

    def sigma(self, sampled_features) -> torch.Tensor:
        """The raw density (N, M, 1) alone: only the density row of the last layer runs (the same
        numbers as ``forward(...)["sigma"]``, at a fraction of the cost for dense grids)."""
        x = sampled_features.mean(1)
        n, m, c = x.shape
        l1, act, l2 = self.net
        h = act(l1(x.reshape(n * m, c)))
        w = l2.weight[:1].to(h.dtype) * l2.weight_gain
        b = l2.bias[:1].to(h.dtype) * l2.bias_gain
        return torch.addmm(b, h, w.t()).reshape(n, m, 1)

    # ------------------------------------------------------------------ for the CUDA kernels
    def kernel_layout(self) -> tuple[int, int, int] | None:
        """(plane channels, hidden width, colour features) when the kernels can evaluate this decoder
        exactly (this class's forward, linear FC layers with biases, softplus(β=1, threshold=20)), else None."""
        if type(self).forward is not OSGDecoder.forward:
            return None
        l1, act, l2 = self.net if len(self.net) == 3 else (None, None, None)
        ok = (isinstance(l1, FullyConnectedLayer) and isinstance(l2, FullyConnectedLayer)
              and isinstance(act, nn.Softplus) and act.beta == 1 and act.threshold == 20
              and all(layer.activation == "linear" and layer.bias is not None for layer in (l1, l2))
              and l2.in_features == l1.out_features)
        return (l1.in_features, l1.out_features, l2.out_features - 1) if ok else None

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 (W1 (hidden, cin), b1, W2 (1 + features, hidden), b2) with the layers' gains applied:
        exactly what FullyConnectedLayer.forward multiplies float32 inputs by."""
        out = []
        with torch.no_grad():
            for fc in (self.net[0], self.net[2]):
                w = fc.weight.to(torch.float32) * fc.weight_gain
                b = fc.bias.to(torch.float32)
                if fc.bias_gain != 1:
                    b = b * fc.bias_gain
                out += [w, b]
        return tuple(out)

    def packed_parameters(self, out_pad: int, device) -> torch.Tensor:
        """The effective weights in the kernels' layout, float32 on ``device``:
        W1 (hidden x cin) | b1 | W2^T (hidden x out_pad, zero padded) | b2 (out_pad, zero padded).
        Cached while the parameters are unchanged."""
        params = (self.net[0].weight, self.net[0].bias, self.net[2].weight, self.net[2].bias)
        key = (tuple(p._version for p in params), tuple(p.data_ptr() for p in params), int(out_pad),
               torch.device(device))
        if self._packed is not None and self._packed[0] == key:
            return self._packed[1]
        w1, b1, w2, b2 = self.effective_weights()
        n_out, hidden = w2.shape
        if out_pad < n_out:
            raise ValueError(f"out_pad {out_pad} is smaller than the decoder's {n_out} outputs")
        with torch.no_grad():
            w2t = torch.zeros(hidden, out_pad, dtype=torch.float32, device=w2.device)
            w2t[:, :n_out] = w2.t()
            b2p = torch.zeros(out_pad, dtype=torch.float32, device=b2.device)
            b2p[:n_out] = b2
            packed = torch.cat([w1.reshape(-1), b1, w2t.reshape(-1), b2p]).to(device).contiguous()
        self._packed = (key, packed)
        return packed


__all__ = ["OSGDecoder"]

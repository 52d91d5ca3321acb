"""A small patch discriminator: the cheap adversarial term that keeps a regression sharp.

Regression onto a teacher converges to the mean of what the model cannot yet tell apart, which is a
blur; a discriminator that judges local patches (pix2pix's PatchGAN) penalises the blur itself. The
regression keeps the content, so the adversarial weight stays small (pix2pix: L1 100 : GAN 1).

Non-saturating logistic loss, lazy R1 on real patches. Unconditional: it sees only local texture.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, 1, H/16, W/16) logits, one per overlapping ~46 px patch."""

    def __init__(self, channels: int = 32, layers: int = 4):
        super().__init__()
        mods, c_in = [], 3
        for i in range(layers):
            c_out = channels * 2 ** min(i, 3)
            mods += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


class PatchAdversary:
    """The discriminator, its optimiser and the two losses."""

    def __init__(self, lr: float = 2e-4, r1_gamma: float = 0.1, r1_interval: int = 16, channels: int = 32):
        self.D = PatchDiscriminator(channels)
        self.opt = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.99))
        self.r1_gamma, self.r1_interval = r1_gamma, r1_interval
        self.steps = 0

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        self.D.requires_grad_(False)
        loss = F.softplus(-self.D(fake)).mean()
        self.D.requires_grad_(True)
        return loss

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict:
        real = real.detach().requires_grad_(self.steps % self.r1_interval == 0 and self.r1_gamma > 0)
        lr_, lf = self.D(real), self.D(fake.detach())
        loss = F.softplus(-lr_).mean() + F.softplus(lf).mean()
        logs = {"d_real": float(lr_.detach().mean()), "d_fake": float(lf.detach().mean())}
        if real.requires_grad:
            (g,) = torch.autograd.grad(lr_.sum(), real, create_graph=True)
            r1 = g.square().sum((1, 2, 3)).mean()
            loss = loss + 0.5 * self.r1_gamma * self.r1_interval * r1
            logs["r1"] = float(r1.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        logs["d_loss"] = float(loss.detach())
        return logs

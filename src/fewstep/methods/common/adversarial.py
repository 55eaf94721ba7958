"""GAN pieces shared by adversarial distillers: a head on a denoiser's bottleneck and non-saturating losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BottleneckHead(nn.Module):
    """DMD2's discriminator head (§4.2): a small conv branch on the critic's bottleneck -> one logit.

    Image features (B, C, h, w): GroupNorm-SiLU-conv(stride 2)-GroupNorm-SiLU-pool-linear.
    Vector features (B, C) (2-D toy): linear-SiLU-linear.
    """

    def __init__(self, channels: int, spatial: bool):
        super().__init__()
        g = 8 if channels % 8 == 0 else 1
        if spatial:
            self.net = nn.Sequential(nn.GroupNorm(g, channels), nn.SiLU(),
                                     nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                                     nn.GroupNorm(g, channels), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(channels, 1))
        else:
            self.net = nn.Sequential(nn.SiLU(), nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class CriticWithHead(nn.Module):
    """The fake-score denoiser and its GAN head, trained together in the critic phase.

    forward() returns D_fake(x; sigma) and, when `gan_x` is given, the head's logits on it: one call per
    step, so a DDP-wrapped critic syncs the gradients of both terms. `multiscale` adds a head of the same
    form on each decoder level's output; the logit is the mean of all heads' (one discriminator, whose optimum
    is still the log density ratio).
    """

    def __init__(self, denoiser: nn.Module, spatial: bool, gan: bool = True, multiscale: bool = False):
        super().__init__()
        self.denoiser = denoiser
        chans = denoiser.feature_channels
        # no head without a GAN term: every parameter then takes part in each step (DDP needs no extra pass)
        self.head = BottleneckHead(chans[0], spatial) if gan else None
        self.level_heads = nn.ModuleList(BottleneckHead(c, spatial) for c in chans[1:]) if gan and multiscale else None

    def forward(self, x, sigma, labels, gan_x=None, gan_sigma=None, gan_labels=None):
        d = self.denoiser(x, sigma, labels)
        if gan_x is None:
            return d
        return d, self.logits(gan_x, gan_sigma, gan_labels)

    def logits(self, x_noisy, sigma, labels) -> torch.Tensor:
        return self.with_logits(x_noisy, sigma, labels)[1]

    def with_logits(self, x_noisy, sigma, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """D_fake(x) and the head's logit on the same input, from one pass."""
        d, feats = self.denoiser(x_noisy, sigma, labels, features=True)
        if self.level_heads is None:
            return d, self.head(feats[0])
        heads = [self.head, *self.level_heads]
        return d, torch.stack([h(f) for h, f in zip(heads, feats, strict=True)]).mean(0)


def random_translate(x: torch.Tensor, p: float, shift: int = 1) -> torch.Tensor:
    """Shift each image, with probability p, by a random integer offset of up to `shift` pixels per axis (edges
    replicated): a differentiable augmentation of what the discriminator sees, applied alike to real and generated
    images (DiffAugment, Zhao et al. 2020), against a discriminator that overfits a small real set. With p < 1 it
    does not leak into the generator (ADA, Karras et al. 2020 §2). Images only: other inputs pass unchanged."""
    if p <= 0 or x.dim() != 4:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (2, b), device=x.device)
    offsets = torch.where(torch.rand(b, device=x.device) < p, offsets, torch.full_like(offsets, shift))
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()

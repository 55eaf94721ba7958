"""A small VQ autoencoder that turns 28x28 images into a grid of discrete tokens (7x7 by default).

Codebook learned with exponential-moving-average k-means updates and restarts of dead codes
(van den Oord et al. 2017, App. A.1; Razavi et al. 2019), straight-through gradients, commitment loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.models.base import SpecModule


@dataclass
class VQConfig:
    in_channels: int = 1
    image_size: int = 28
    channels: int = 64  # below full resolution
    stem_channels: int = 32  # at full resolution
    downsample: int = 2  # stride-2 stages: 28 -> 14 -> 7
    codebook_size: int = 256
    code_dim: int = 32
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.99


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                 nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class EMAQuantizer(nn.Module):
    def __init__(self, size: int, dim: int, decay: float):
        super().__init__()
        self.size, self.dim, self.decay = size, dim, decay
        self.register_buffer("codebook", torch.randn(size, dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        d = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.t() + self.codebook.pow(2).sum(1)[None]
        return d.argmin(1)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        if not bool(self.initialized):
            pick = torch.randint(0, z.shape[0], (self.size,), device=z.device)
            self.codebook.copy_(z[pick])
            self.embed_sum.copy_(z[pick])
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
            return
        onehot = F.one_hot(idx, self.size).type(z.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.size * 1e-5) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < 1e-2
        if dead.any():
            pick = torch.randint(0, z.shape[0], (int(dead.sum()),), device=z.device)
            self.codebook[dead] = z[pick]
            self.embed_sum[dead] = z[pick]
            self.cluster_size[dead] = 1.0

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat.detach().float())
        if self.training:
            self._ema_update(flat.detach().float(), idx)
            idx = self.nearest(flat.detach().float())
        z_q = self.codebook[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        commit = F.mse_loss(z_e, z_q.detach())
        z_q = z_e + (z_q - z_e).detach()  # straight-through estimator
        return z_q, idx.view(b, h * w), commit


class VQModel(SpecModule):
    model_type = "vq"
    Config = VQConfig

    def __init__(self, cfg: VQConfig):
        super().__init__(cfg)
        c, c0 = cfg.channels, cfg.stem_channels
        # full resolution is where convolutions cost most on a CPU: a thin stem there, residual blocks below
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, c0, 3, padding=1), nn.SiLU(),
                                nn.Conv2d(c0, c, 4, stride=2, padding=1), ResBlock(c)]
        for _ in range(cfg.downsample - 1):
            enc += [nn.Conv2d(c, c, 4, stride=2, padding=1), ResBlock(c)]
        enc += [nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = EMAQuantizer(cfg.codebook_size, cfg.code_dim, cfg.ema_decay)
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, c, 3, padding=1), ResBlock(c)]
        for _ in range(cfg.downsample - 1):
            dec += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), ResBlock(c)]
        dec += [nn.ConvTranspose2d(c, c0, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(c0, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def grid(self) -> tuple[int, int]:
        s = self.cfg.image_size // 2 ** self.cfg.downsample
        return (s, s)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, idx, commit = self.quantizer(self.encoder(images * 2.0 - 1.0))
        return self._decode_latent(z_q), idx, commit

    def _decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z_q))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        z = self.encoder(images * 2.0 - 1.0)
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d).float()).view(b, h * w)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        codes = codes.clamp(0, self.cfg.codebook_size - 1)
        z = self.quantizer.codebook[codes].view(codes.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return self._decode_latent(z)

"""EDM-preconditioned denoisers: a small class-conditional UNet for images and an MLP for 2-D points.

forward(x, sigma, labels) returns D(x; sigma, y), the denoised estimate. `features=True` also returns
a list of activations for GAN heads: the bottleneck first, where DMD2's head reads (DMD2 §4.2), then (UNet)
each decoder level's output, coarse to fine (`feature_channels` lists their widths). The null class
(= num_classes) is the unconditional model used by classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.models.base import SpecModule
from fewstep.processes.gaussian import expand, precondition


def fourier_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoids of 100 x at frequencies 1 .. 1/max_period (c_noise = ln(sigma)/4 spans about [-1.6, 1.1])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = (100.0 * x.float())[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class EDMDenoiserBase(nn.Module):
    """What both denoisers share: the noise-level + class embedding, and EDM preconditioning around `raw`,
    the network F(c_in x; c_noise, y) -> (output, list of features, bottleneck first)."""

    def _make_embed(self, num_classes: int, emb_dim: int) -> None:
        self.emb_dim = emb_dim
        self.noise_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)

    def tile_classes(self, copies: int) -> "EDMDenoiserBase":
        """Make the label space `copies` copies of this one, each starting from these class embeddings: label
        y + j (num_classes + 1) is class y (or the null class) in copy j. In place, saved config included."""
        rows = self.class_emb.weight.detach().repeat(copies, 1)
        self.cfg.num_classes = len(rows) - 1
        self.null_class = self.cfg.num_classes
        self.class_emb = nn.Embedding.from_pretrained(rows, freeze=False)  # repeat made a new tensor
        return self

    def _embed(self, c_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.silu(self.noise_mlp(fourier_embedding(c_noise, self.emb_dim)) + self.class_emb(labels))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, features: bool = False):
        sigma = sigma.to(torch.float32).reshape(-1).expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = precondition(sigma, self.cfg.sigma_data)
        f, feats = self.raw(expand(c_in, x) * x, c_noise, labels)
        d = expand(c_skip, x) * x + expand(c_out, x) * f.to(x.dtype)
        return (d, feats) if features else d


# ------------------------------------------------------------------------------------------------ images


@dataclass
class UNetConfig:
    in_channels: int = 1
    image_size: int = 8
    channels: tuple[int, ...] = (32, 64)  # one entry per resolution level (each level halves the size)
    blocks_per_level: int = 1
    num_classes: int = 10
    emb_dim: int = 128
    attention: bool = False  # self-attention in the middle block
    dropout: float = 0.0
    sigma_data: float = 0.5


def _groups(c: int) -> int:
    return 8 if c % 8 == 0 else 1


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class SelfAttention(nn.Module):
    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(a.transpose(-1, -2).reshape(b, c, h, w))


class UNetDenoiser(SpecModule, EDMDenoiserBase):
    model_type = "unet_denoiser"
    Config = UNetConfig

    def __init__(self, cfg: UNetConfig):
        SpecModule.__init__(self, cfg)
        chs = list(cfg.channels)
        self._make_embed(cfg.num_classes, cfg.emb_dim)
        self.null_class = cfg.num_classes
        self.conv_in = nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        skip_ch, c = [chs[0]], chs[0]
        for i, ch in enumerate(chs):
            for _ in range(cfg.blocks_per_level):
                self.down.append(ResBlock(c, ch, cfg.emb_dim, cfg.dropout))
                c = ch
                skip_ch.append(c)
            if i < len(chs) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_ch.append(c)
        self.mid1 = ResBlock(c, c, cfg.emb_dim, cfg.dropout)
        self.mid_attn = SelfAttention(c) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, cfg.emb_dim, cfg.dropout)
        self.feature_channels = [c, *reversed(chs)]  # bottleneck, then each decoder level's output
        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            for _ in range(cfg.blocks_per_level + 1):
                self.up.append(ResBlock(c + skip_ch.pop(), ch, cfg.emb_dim, cfg.dropout))
                c = ch
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def raw(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor):
        emb = self._embed(c_noise, labels)
        h = self.conv_in(x_in)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        feats = [h]
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                if isinstance(layer, nn.Upsample):  # a decoder level ends here
                    feats.append(h)
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h))), feats + [h]


# ------------------------------------------------------------------------------------------------ 2-D points


@dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 256
    depth: int = 3
    num_classes: int = 8
    emb_dim: int = 128
    sigma_data: float = 0.5


class MLPDenoiser(SpecModule, EDMDenoiserBase):
    """x gets its own input layer and the embedding is added after it: an MLP that concatenated x with the
    time embedding in one first layer never learned the non-linear part (continuous.md §9)."""

    model_type = "mlp_denoiser"
    Config = MLPConfig

    def __init__(self, cfg: MLPConfig):
        SpecModule.__init__(self, cfg)
        self._make_embed(cfg.num_classes, cfg.emb_dim)
        self.null_class = cfg.num_classes
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.emb_proj = nn.Linear(cfg.emb_dim, cfg.hidden)
        self.layers = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.hidden, cfg.dim)
        self.feature_channels = [cfg.hidden]

    def raw(self, x_in: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor):
        h = self.inp(x_in) + self.emb_proj(self._embed(c_noise, labels))
        for layer in self.layers:
            h = h + layer(F.silu(h))
        return self.out(F.silu(h)), [h]

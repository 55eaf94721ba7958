"""MaskGIT-style bidirectional transformer over image tokens with a class token.

Input ids: image tokens 0..V-1, [M] = V. Class ids: 0..C-1, the dropped ("null") class = C, used for
classifier-free guidance. Output: logits over the V image tokens at every position; the output head
is tied to the token-embedding matrix plus a bias (as in MaskGIT), so freezing the embeddings
(DiMO App. C) freezes the head too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.models.base import SpecModule


@dataclass
class MaskedTransformerConfig:
    vocab_size: int = 17
    seq_len: int = 64
    num_classes: int = 10
    dim: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.1


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # dropout on the residual branches only: on CPU, random numbers for attention maps and MLP hidden
        # units cost more than the matmuls of a small model
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class MaskedTransformer(SpecModule):
    model_type = "masked_transformer"
    Config = MaskedTransformerConfig

    def __init__(self, cfg: MaskedTransformerConfig):
        super().__init__(cfg)
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
        self.mask_id = cfg.vocab_size
        self.null_class = cfg.num_classes
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, cfg.dim)
        self.cls_emb = nn.Embedding(cfg.num_classes + 1, cfg.dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.seq_len + 1, cfg.dim))
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head_proj = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim))
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(self._init)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, embed_noise: torch.Tensor | None = None,
                noise_scale: float = 0.0) -> torch.Tensor:
        """tokens (B, L) long, labels (B,) long -> logits (B, L, V).

        `embed_noise` (B, L, dim) standard normal with `noise_scale` sigma applies DiMO's variance-preserving
        perturbation of the image-token embeddings, e <- sqrt(1 - sigma^2) e + sigma eps (DiMO §4.3).
        """
        e = self.tok_emb(tokens)
        if embed_noise is not None and noise_scale > 0:
            e = math.sqrt(1.0 - noise_scale ** 2) * e + noise_scale * embed_noise.to(e.dtype)
        h = torch.cat([self.cls_emb(labels)[:, None], e], dim=1) + self.pos_emb
        h = self.emb_drop(h)
        for blk in self.blocks:
            h = blk(h)
        h = self.head_proj(self.norm(h[:, 1:]))
        return h @ self.tok_emb.weight[: self.cfg.vocab_size].t() + self.head_bias

    # embedding-related parameters DiMO freezes in the student and the auxiliary model (App. C)
    embedding_parameters = ("tok_emb.", "cls_emb.", "pos_emb", "head_bias")

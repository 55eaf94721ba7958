"""Samplers for masked diffusion models: pure functions over a network `net(tokens, labels, ...) -> logits`.

Every random number comes from a per-sample SeedStream, so sample i is the same in any batch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from fewstep.processes.masked import get_schedule
from fewstep.samplers import check_cfg_scale
from fewstep.samplers.noise import SeedStream

Net = Callable[..., torch.Tensor]


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: probs (..., V), u (...) in [0, 1) -> indices (...)."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous()).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (logits are divided by it), got {temperature}")


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    if k is not None and k < 1:
        raise ValueError(f"top_k must be >= 1 (or unset), got {k}")
    if not k or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def guided_logits(net: Net, tokens: torch.Tensor, labels: torch.Tensor, scale: float | torch.Tensor,
                  null_class: int, **kw) -> torch.Tensor:
    """Classifier-free guidance on logits: z_u + s (z_c - z_u); s = 1 is the plain conditional model.

    `scale` is a float or a per-sample (B,) tensor."""
    if not torch.is_tensor(scale) and scale == 1.0:
        return net(tokens, labels, **kw)
    both = net(torch.cat([tokens, tokens]), torch.cat([labels, torch.full_like(labels, null_class)]), **kw)
    z_c, z_u = both.chunk(2)
    if torch.is_tensor(scale):
        scale = scale.to(z_c.dtype).view(-1, *([1] * (z_c.dim() - 1)))
    return z_u + scale * (z_c - z_u)


def remove_label_smoothing(probs: torch.Tensor, eps: float) -> torch.Tensor:
    """Undo label smoothing: a model trained with smoothing eps predicts (1 - eps) p + eps / V; return p.

    Entries below the floor eps / V (the model's estimate of p there is 0) are clipped, then renormalised."""
    if eps <= 0:
        return probs
    p = (probs - eps / probs.shape[-1]).clamp_min(0)
    return p / p.sum(-1, keepdim=True).clamp_min(1e-30)


def cfg_scale_at(step: int, steps: int, scale: float, ramp: str) -> float:
    """'constant' or 'linear' (MaskGIT-pytorch: guidance grows from 1 to `scale` over the steps)."""
    if ramp == "constant" or steps == 1:
        return scale
    if ramp == "linear":
        return 1.0 + (scale - 1.0) * step / (steps - 1)
    raise ValueError(f"unknown cfg ramp '{ramp}'; choose constant or linear")


@torch.no_grad()
def maskgit_sample(
    net: Net,
    labels: torch.Tensor,
    seeds: list[int],
    *,
    seq_len: int,
    mask_id: int,
    null_class: int,
    steps: int = 16,
    schedule: str = "arccos",
    cfg_scale: float = 1.0,
    cfg_ramp: str = "constant",
    temperature: float = 1.0,
    remask: str = "confidence",
    gumbel_temp: float = 4.5,
    top_k: int | None = None,
    desmooth: float = 0.0,
) -> torch.Tensor:
    """MaskGIT iterative decoding from all-[M] in `steps` steps; returns tokens (B, L).

    Each step predicts every masked token, then keeps the ones ranked highest and re-masks the rest so
    that exactly round(r((k+1)/S) L) stay masked. Ranking: 'confidence' = log p(sampled token) + Gumbel
    noise whose temperature anneals linearly to 0 (MaskGIT), or 'random' (DiMO's teacher setting, App. C).
    `desmooth` = the label smoothing the model was trained with: sample its estimate of the data conditionals
    instead of the smoothed ones (see remove_label_smoothing).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if remask not in ("confidence", "random"):
        raise ValueError(f"unknown remask '{remask}'; choose confidence or random")
    check_temperature(temperature)
    check_cfg_scale(cfg_scale)
    if not 0.0 <= desmooth < 1.0:
        raise ValueError(f"desmooth must be in [0, 1): the label smoothing the model was trained with, got {desmooth}")
    device = labels.device
    b = labels.shape[0]
    draws = SeedStream(seeds, device).rand(steps, 2, seq_len)  # (B, S, 2, L): token draw, ranking noise
    sched = get_schedule(schedule)
    x = torch.full((b, seq_len), mask_id, dtype=torch.long, device=device)
    for k in range(steps):
        masked = x == mask_id
        n_masked = int(masked[0].sum())
        n_next = 0 if k == steps - 1 else int(round(float(sched(torch.tensor((k + 1) / steps))) * seq_len))
        n_next = max(0, min(n_next, n_masked - 1))
        scale = cfg_scale_at(k, steps, cfg_scale, cfg_ramp)
        logits = guided_logits(net, x, labels, scale, null_class).float() / temperature
        if desmooth > 0:
            logits = remove_label_smoothing(torch.softmax(logits, -1), desmooth).clamp_min(1e-30).log()
        probs = torch.softmax(top_k_filter(logits, top_k), dim=-1)
        sampled = categorical_from_uniform(probs, draws[:, k, 0])
        if remask == "confidence":
            u = draws[:, k, 1].clamp(1e-20, 1 - 1e-7)
            gumbel = -torch.log(-torch.log(u))
            conf = torch.log(probs.gather(-1, sampled[..., None]).squeeze(-1).clamp_min(1e-30))
            conf = conf + gumbel_temp * (1.0 - k / steps) * gumbel
        else:
            conf = draws[:, k, 1]
        conf = conf.masked_fill(~masked, -math.inf)
        rank = conf.argsort(dim=1, descending=True).argsort(dim=1)
        reveal = masked & (rank < (n_masked - n_next))
        x = torch.where(reveal, sampled, x)
    return x


def hybrid_init(draws_tokens: torch.Tensor, draws_pos: torch.Tensor, vocab_size: int, mask_id: int,
                r_init: torch.Tensor | float) -> torch.Tensor:
    """DiMO's hybrid initial tokens (§4.3): uniform random image tokens, exactly max(1, round(r_init L)) set to [M].

    draws_* are uniforms (B, L); r_init a float or a (B,) tensor.
    """
    b, length = draws_tokens.shape
    x = (draws_tokens * vocab_size).long().clamp(max=vocab_size - 1)
    r = torch.as_tensor(r_init, dtype=torch.float32, device=x.device).expand(b)
    counts = torch.round(r * length).long().clamp(1, length)
    ranks = draws_pos.argsort(dim=1).argsort(dim=1)
    return torch.where(ranks < counts[:, None], torch.full_like(x, mask_id), x)


@torch.no_grad()
def onestep_sample(
    net: Net,
    labels: torch.Tensor,
    seeds: list[int],
    *,
    seq_len: int,
    vocab_size: int,
    mask_id: int,
    embed_dim: int,
    r_init: float = 0.6,
    sigma_init: float = 0.1,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> torch.Tensor:
    """One forward pass of a one-step generator from a hybrid initial sequence; returns tokens (B, L)."""
    check_temperature(temperature)
    s = SeedStream(seeds, labels.device)
    u = s.rand(3, seq_len)
    noise = s.randn(seq_len, embed_dim) if sigma_init > 0 else None
    x_init = hybrid_init(u[:, 0], u[:, 1], vocab_size, mask_id, r_init)
    logits = net(x_init, labels, embed_noise=noise, noise_scale=sigma_init).float()
    probs = torch.softmax(top_k_filter(logits / temperature, top_k), dim=-1)
    return categorical_from_uniform(probs, u[:, 2])

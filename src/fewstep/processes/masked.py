"""The absorbing (masking) forward process of masked diffusion models.

A schedule maps progress t in [0, 1] to the mask ratio r(t): r(0) = 1 (all [M]) and r(1) = 0.
Training masks exactly n = round(r * L) positions (at least 1), chosen uniformly: the "exact count"
masking of MaskGIT and of DiMO's re-masking (DiMO §4.2), not independent Bernoulli draws.
"""

from __future__ import annotations

import math

import torch

from fewstep.registry import lookup


def arccos_schedule(t: torch.Tensor) -> torch.Tensor:
    """MaskGIT's default: r = (2 / pi) * arccos(t)."""
    return (2.0 / math.pi) * torch.arccos(t.clamp(0.0, 1.0))


def cosine_schedule(t: torch.Tensor) -> torch.Tensor:
    """r = cos(pi t / 2) (MaskGIT paper, Meissonic)."""
    return torch.cos(0.5 * math.pi * t.clamp(0.0, 1.0))


def linear_schedule(t: torch.Tensor) -> torch.Tensor:
    return 1.0 - t.clamp(0.0, 1.0)


SCHEDULES = {"arccos": arccos_schedule, "cosine": cosine_schedule, "linear": linear_schedule}


def get_schedule(name: str):
    return lookup("mask schedule", name, SCHEDULES)


def mask_counts(ratio: torch.Tensor, length: int, minimum: int = 1) -> torch.Tensor:
    """Exact number of masked positions per row: round(r * L), clamped to [minimum, L]."""
    return torch.round(ratio * length).long().clamp(minimum, length)


def random_positions_mask(counts: torch.Tensor, length: int, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (B, L) with exactly counts[b] True entries per row at uniformly random positions.

    `scores` (B, L) uniform noise can be supplied for reproducibility; ranks of the scores pick positions.
    """
    if scores is None:
        scores = torch.rand(counts.shape[0], length, device=counts.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def apply_mask(tokens: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    return torch.where(mask, torch.full_like(tokens, mask_id), tokens)


def forward_mask(tokens: torch.Tensor, schedule: str, mask_id: int,
                 t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample x_t ~ q(x_t | x_0): t ~ U[0, 1] per row, mask exactly round(r(t) L) positions.

    Returns (x_t, mask) where mask marks the [M] positions.
    """
    b, length = tokens.shape
    if t is None:
        t = torch.rand(b, device=tokens.device)
    counts = mask_counts(get_schedule(schedule)(t), length)
    mask = random_positions_mask(counts, length)
    return apply_mask(tokens, mask, mask_id), mask

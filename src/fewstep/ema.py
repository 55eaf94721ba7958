"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * params; with warm-up d = min(decay, (1 + n) / (10 + n))."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        shadow = list(self.module.parameters())
        live = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - d)
        for b_s, b in zip(self.module.buffers(), module.buffers()):
            b_s.copy_(b)
        self.num_updates += 1

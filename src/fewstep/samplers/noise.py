"""Per-sample random streams: sample i depends only on seeds[i], never on the batch it is drawn in."""

from __future__ import annotations

import torch


class SeedStream:
    """One torch.Generator per seed; each draw takes the next values of every row's own generator."""

    def __init__(self, seeds: list[int] | torch.Tensor, device: torch.device | str = "cpu"):
        seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.generators)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g) for g in self.generators]).to(self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)


def parse_seeds(text: str) -> list[int]:
    """'0-99' -> [0..99]; '1,5,7' -> [1, 5, 7]; combinations like '0-9,100' work too."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"seed range '{part}' is empty")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return out

"""Dataset container shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Dataset:
    """A labelled dataset with a train/test split.

    Image datasets hold `images` as float tensors in [0, 1] of shape (N, 1, H, W). Datasets with a native
    tokenisation (digits' 17 grey levels, the synthetic chains) also hold `tokens` of shape (N, L).
    """

    name: str
    num_classes: int
    class_names: list[str]
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    train_images: torch.Tensor | None = None
    test_images: torch.Tensor | None = None
    train_tokens: torch.Tensor | None = None
    test_tokens: torch.Tensor | None = None
    vocab_size: int | None = None  # of the native tokens
    token_grid: tuple[int, ...] | None = None  # (h, w) for images, (L,) for sequences
    exact: Any = None  # a distribution with exact probabilities / scores (synthetic, ring2d)
    train_points: torch.Tensor | None = None  # 2-D toy data (N, 2)
    test_points: torch.Tensor | None = None
    default_tokenizer: str = "identity"
    notes: dict = field(default_factory=dict)

    @property
    def has_images(self) -> bool:
        return self.train_images is not None

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return tuple(self.train_images.shape[1:]) if self.has_images else None


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split; returns (train_idx, test_idx), each sorted."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values

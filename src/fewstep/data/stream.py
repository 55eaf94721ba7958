"""An in-memory, exactly resumable batch stream: the position is one integer (batches drawn so far)."""

from __future__ import annotations

import torch

from fewstep.errors import FewstepError


class BatchStream:
    """Shuffled batches without replacement; epoch e uses the permutation seeded by (seed, e).

    Each of `world` ranks takes a disjoint slice of every global batch, so the stream is identical for
    any number of processes with the same global batch size.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, device: torch.device | str = "cpu"):
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError("all tensors of a stream need the same length")
        self.n = sizes.pop()
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self.per_epoch = self.n // (batch_size * world)
        if self.per_epoch == 0:
            raise FewstepError(
                f"batch size {batch_size} x {world} process(es) exceeds the {self.n} training examples; "
                "lower train.batch_size"
            )
        self.cursor = 0
        self._perm_epoch, self._perm = -1, None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, i = divmod(self.cursor, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        start = (i * self.world + self.rank) * self.batch_size
        idx = self._perm[start:start + self.batch_size]
        self.cursor += 1
        return {k: v[idx].to(self.device, non_blocking=True) for k, v in self.tensors.items()}

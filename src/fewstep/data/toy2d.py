"""A class-conditional 2-D Gaussian mixture: 8 modes on a ring of radius 2, std 0.1; class k = mode k.

Its noised marginals are exact: p_sigma(x | k) = N(mu_k, (s^2 + sigma^2) I), so the score of the noised
teacher distribution is known in closed form (used to check DMD's gradient direction).
"""

from __future__ import annotations

import math

import torch

from fewstep.data.base import Dataset


class GaussianRing:
    def __init__(self, modes: int = 8, radius: float = 2.0, std: float = 0.1):
        angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
        self.means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)
        self.std, self.modes = std, modes

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(len(labels), 2, generator=generator, dtype=torch.float64)
        return (self.means[labels] + self.std * noise).float()

    def score(self, x: torch.Tensor, sigma: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """grad_x log p_sigma(x | label), or of the unconditional mixture when labels is None."""
        x = x.double()
        var = self.std ** 2 + sigma ** 2
        if labels is not None:
            return ((self.means[labels] - x) / var).float()
        d = x[:, None, :] - self.means[None]  # (B, K, 2)
        w = torch.softmax(-(d ** 2).sum(-1) / (2 * var), dim=1)
        return (-(w[..., None] * d).sum(1) / var).float()

    def denoised(self, x: torch.Tensor, sigma: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x_0 | x_sigma] = x + sigma^2 score (Tweedie)."""
        return x + sigma ** 2 * self.score(x, sigma, labels)


def load_ring2d(data_dir: str | None = None, num_train: int = 20000, num_test: int = 5000) -> Dataset:
    ring = GaussianRing()
    g = torch.Generator().manual_seed(4321)
    y_tr = torch.randint(0, ring.modes, (num_train,), generator=g)
    y_te = torch.randint(0, ring.modes, (num_test,), generator=g)
    ds = Dataset(name="ring2d", num_classes=ring.modes, class_names=[f"mode{k}" for k in range(ring.modes)],
                 train_labels=y_tr, test_labels=y_te, exact=ring, default_tokenizer="none")
    ds.train_points, ds.test_points = ring.sample(y_tr, g), ring.sample(y_te, g)
    return ds


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|a - b| - E|a - a'| - E|b - b'| (0 iff the distributions match)."""
    a, b = a.double(), b.double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def ring_metrics(ring: GaussianRing, points: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> dict:
    """energy distance to held-out data; precision = within 4 std of some mode; class accuracy = nearest mode
    is the requested one; modes hit = modes receiving at least 1% of the samples."""
    d = torch.cdist(points.double(), ring.means)
    nearest = d.argmin(1)
    close = d.min(1).values < 4 * ring.std
    hits = torch.bincount(nearest[close], minlength=ring.modes).double() / len(points)
    return {"energy": energy_distance(points, reference), "precision": float(close.double().mean()),
            "class_acc": float((nearest == labels).double().mean()), "modes_hit": int((hits >= 0.01).sum()),
            "n": len(points)}

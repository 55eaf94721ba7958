"""Sample-set metrics in a feature space: FID, KID, precision/recall/density/coverage."""

from __future__ import annotations

import numpy as np
import torch


def _stats(f: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = f.double().cpu().numpy()
    return x.mean(0), np.cov(x, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with tr (S_a S_b)^1/2 = tr (S_a^1/2 S_b S_a^1/2)^1/2."""
    mu1, s1 = _stats(a)
    mu2, s2 = _stats(b)
    r1 = _sqrtm_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def kernel_distance(a: torch.Tensor, b: torch.Tensor, subsets: int = 20, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over subsets."""
    a, b = a.double(), b.double()
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx = (x @ x.t() / d + 1) ** 3
        kyy = (y @ y.t() / d + 1) ** 3
        kxy = (x @ y.t() / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.diagonal().sum()) + (kyy.sum() - kyy.diagonal().sum())) / (m * (m - 1)) \
            - 2 * kxy.mean()
        vals.append(float(mmd))
    return float(np.mean(vals))


def _pairwise(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([torch.cdist(a[i:i + chunk], b) for i in range(0, len(a), chunk)])


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = _pairwise(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) with k-NN balls."""
    real, fake = real.float(), fake.float()
    r_real = _kth_nn_radius(real, k)
    r_fake = _kth_nn_radius(fake, k)
    d_rf = _pairwise(real, fake)  # (R, F)
    inside_real = d_rf < r_real[:, None]  # fake j inside real i's ball
    precision = inside_real.any(0).float().mean()
    recall = (d_rf < r_fake[None, :]).any(1).float().mean()
    density = inside_real.float().sum(0).mean() / k
    coverage = (d_rf.min(1).values < r_real).float().mean()
    return {"precision": float(precision), "recall": float(recall),
            "density": float(density), "coverage": float(coverage)}

"""EDM's Gaussian process in sigma space (Karras et al. 2022): x_sigma = x + sigma * n.

Preconditioning (EDM Table 1): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), with
c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2),
c_noise = ln(sigma) / 4. Training: ln sigma ~ N(P_mean, P_std^2), weight lambda = (sigma^2 + sd^2) / (sigma sd)^2.
"""

from __future__ import annotations

import torch

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0


def precondition(sigma: torch.Tensor, sigma_data: float):
    s2, d2 = sigma ** 2, sigma_data ** 2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1.0 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


def sample_sigma(n: int, p_mean: float = -1.2, p_std: float = 1.2, device=None) -> torch.Tensor:
    return (torch.randn(n, device=device) * p_std + p_mean).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """n noise levels from sigma_max down to sigma_min (EDM Eq. 5), float64."""
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def expand(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> broadcastable against x (B, ...)."""
    return sigma.reshape(-1, *([1] * (x.dim() - 1)))

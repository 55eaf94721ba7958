"""Samplers for EDM denoisers: pure functions over `net(x, sigma, labels) -> D(x; sigma)`."""

from __future__ import annotations

from typing import Callable

import torch

from fewstep.processes.gaussian import SIGMA_MAX, SIGMA_MIN, expand, karras_sigmas
from fewstep.samplers import check_cfg_scale
from fewstep.samplers.noise import SeedStream

Denoiser = Callable[..., torch.Tensor]


def guided_denoise(net: Denoiser, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, scale: float,
                   null_class: int, interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Classifier-free guidance in x0 space: D_u + s (D_c - D_u); s = 1 is the conditional model. With `interval`
    (lo, hi) only samples at lo < sigma <= hi are guided, the rest get the conditional model (guidance in a limited
    interval, Kynkäänniemi et al. 2024, §3); None guides every level."""
    inside = None if interval is None else (sigma > interval[0]) & (sigma <= interval[1])
    if scale == 1.0 or (inside is not None and not bool(inside.any())):
        return net(x, sigma, labels)
    both = net(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([labels, torch.full_like(labels, null_class)]))
    d_c, d_u = both.chunk(2)
    guided = d_u + scale * (d_c - d_u)
    return guided if inside is None else torch.where(expand(inside, guided), guided, d_c)


def check_cfg_interval(interval, name: str = "cfg_interval") -> tuple[float, float] | None:
    if interval is None:
        return None
    if len(interval) != 2 or not 0.0 <= float(interval[0]) < float(interval[1]):
        raise ValueError(f"{name} must be [lo, hi] with 0 <= lo < hi: guidance applies at noise levels lo < sigma <= hi "
                         f"(got {list(interval)}; null guides every level)")
    return float(interval[0]), float(interval[1])


def checked_noise_scale(noise_scale: float | None, name: str = "noise_scale") -> float:
    if noise_scale is None:
        return 1.0
    if not noise_scale > 0.0:
        raise ValueError(f"{name} must be > 0, got {noise_scale} (1 = the trained model; a little above 1 "
                         "widens the samples)")
    return float(noise_scale)


@torch.no_grad()
def edm_sample(net: Denoiser, labels: torch.Tensor, seeds: list[int], shape: tuple[int, ...], *, steps: int = 18,
               solver: str = "heun", cfg_scale: float = 1.0, null_class: int = 10, sigma_min: float = SIGMA_MIN,
               sigma_max: float = SIGMA_MAX, rho: float = 7.0, noise_scale: float | None = None,
               sigma_scale: float | None = None, cfg_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Deterministic EDM sampler (Karras et al. 2022, Alg. 1): `steps` noise levels, Euler or Heun (2nd order,
    not on the last step), so NFE = steps (Euler) or 2 steps - 1 (Heun), doubled by CFG. Returns x_0.
    `noise_scale` multiplies the starting noise (a temperature; None or 1 = the paper); `sigma_scale` k tells the
    denoiser sigma / k, so it removes less noise (on Gaussian data the samples widen by k; None or 1 = the paper)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    noise_scale = checked_noise_scale(noise_scale)
    sig = karras_sigmas(steps, sigma_min, sigma_max, rho)
    x = SeedStream(seeds, labels.device).randn(*shape).double() * (sig[0] * noise_scale)
    return edm_solve(net, x, sig, labels, solver=solver, cfg_scale=cfg_scale, null_class=null_class,
                     sigma_scale=sigma_scale, cfg_interval=cfg_interval)


@torch.no_grad()
def edm_solve(net: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, labels: torch.Tensor, *, solver: str = "heun",
              cfg_scale: float = 1.0, null_class: int = 10, sigma_scale: float | None = None,
              cfg_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """The probability-flow ODE from x at sigmas[0] through the descending `sigmas` to 0 (EDM Alg. 1 without
    noise), Euler or Heun (not on the step to 0); guidance only at levels in `cfg_interval` where given. Returns x_0."""
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver '{solver}'; choose heun or euler")
    check_cfg_scale(cfg_scale)
    interval = check_cfg_interval(cfg_interval)
    k = checked_noise_scale(sigma_scale, "sigma_scale")
    sig = torch.cat([sigmas.double(), torch.zeros(1, dtype=torch.float64)])
    x, b, device = x.double(), x.shape[0], labels.device
    for i in range(len(sigmas)):
        s_cur, s_next = sig[i], sig[i + 1]
        d = (x - guided_denoise(net, x.float(), torch.full((b,), float(s_cur) / k, device=device), labels, cfg_scale,
                                null_class, interval).double()) / s_cur
        x_next = x + (s_next - s_cur) * d
        if solver == "heun" and i < len(sigmas) - 1:
            d2 = (x_next - guided_denoise(net, x_next.float(), torch.full((b,), float(s_next) / k, device=device),
                                          labels, cfg_scale, null_class, interval).double()) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d + d2)
        x = x_next
    return x.float()


def edm_solve_from(net: Denoiser, x: torch.Tensor, sigma: float, steps: int, labels: torch.Tensor,
                   **options) -> torch.Tensor:
    """`edm_solve` from x at noise level `sigma` over a `steps`-level Karras grid down to sigma_min (or to sigma
    itself, below it): the teacher's ODE from a few-step generator's input level."""
    return edm_solve(net, x, karras_sigmas(steps, min(SIGMA_MIN, sigma), sigma), labels, **options)


@torch.no_grad()
def fewstep_sample(net: Denoiser, labels: torch.Tensor, seeds: list[int], shape: tuple[int, ...],
                   sigmas: list[float], noise_scale: float | None = None) -> torch.Tensor:
    """A one- or few-step generator (DMD2 §4.3): x = sigma_0 z; x0 = G(x; sigma_j); re-noise x0 to sigma_{j+1}.
    `noise_scale` multiplies the starting noise only (a temperature; None or 1 = the paper); re-noising stays exact."""
    noise_scale = checked_noise_scale(noise_scale)
    device = labels.device
    noise = SeedStream(seeds, device).randn(len(sigmas), *shape)  # (B, N, ...) per-seed
    b = labels.shape[0]
    x = noise[:, 0] * (sigmas[0] * noise_scale)
    for j, s in enumerate(sigmas):
        x0 = net(x, torch.full((b,), float(s), device=device), labels)
        if j + 1 < len(sigmas):
            x = x0 + sigmas[j + 1] * noise[:, j + 1]
    return x0

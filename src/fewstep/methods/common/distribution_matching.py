"""Distribution-matching pieces shared by DiMO (discrete) and DMD2/MSD (continuous).

Both methods update the generator output x (DiMO: logits, DMD2: images) with a pseudo-gradient g
that autograd cannot produce directly, through the surrogate  L = 1/2 * s * ||x - sg(x - g)||^2,
whose gradient w.r.t. x is exactly s * g (DMD Eq. 7; DiMO Eq. 7 and its official code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


def surrogate_loss(x: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Sum of 1/2 * scale * (x - sg(x - g))^2; d/dx = scale * g. NaN/Inf in g are zeroed (as both official codes do)."""
    g = torch.nan_to_num(grad.detach().to(x.dtype), nan=0.0, posinf=0.0, neginf=0.0)
    target = (x - g).detach()
    return 0.5 * (scale * (x - target) ** 2).sum()


# ------------------------------------------------------------------ discrete: divergences between token distributions
# Convention (DiMO App. A.2): D_f(p || q) = sum_k q_k f(p_k / q_k) with p = teacher, q = softmax(z) (aux / student).
# For any f, with u = p / q and h(u) = f(u) - u f'(u):
#     dD/dz_j = q_j * (h(u_j) - sum_k q_k h(u_k))                                   (one formula for the whole family)
# FKL, RKL and the generalized Jeffrey divergence also have the closed forms of DiMO Eq. 14-16 (used by default).


@dataclass(frozen=True)
class FDivergence:
    name: str
    f: Callable[[torch.Tensor], torch.Tensor]  # of u (float64)
    h_log: Callable[[torch.Tensor], torch.Tensor]  # h(u) written as a function of log u, for stability
    weight_log: Callable[[torch.Tensor], torch.Tensor]  # u^2 f''(u) as a function of log u (continuous weighting)


def _f_divergences(beta: float, alpha: float) -> dict[str, FDivergence]:
    a = alpha
    return {
        "fkl": FDivergence("fkl", lambda u: u * u.log(), lambda lu: -lu.exp(), lambda lu: lu.exp()),
        "rkl": FDivergence("rkl", lambda u: -u.log(), lambda lu: 1.0 - lu, torch.ones_like),
        "jeffrey": FDivergence(
            "jeffrey", lambda u: ((1 - beta) * u - beta) * u.log(),
            lambda lu: -beta * lu - (1 - beta) * lu.exp() + beta, lambda lu: (1 - beta) * lu.exp() + beta),
        # Jensen-Shannon: 1/2 KL(p||m) + 1/2 KL(q||m), m = (p + q) / 2
        "js": FDivergence(
            "js", lambda u: 0.5 * (u * (2 * u / (1 + u)).log() + (2 / (1 + u)).log()),
            lambda lu: 0.5 * (math.log(2.0) - torch.nn.functional.softplus(lu)), lambda lu: 0.5 * torch.sigmoid(lu)),
        # squared Hellinger: sum (sqrt p - sqrt q)^2
        "hellinger": FDivergence("hellinger", lambda u: (u.sqrt() - 1) ** 2, lambda lu: 1.0 - (0.5 * lu).exp(),
                                 lambda lu: 0.5 * (0.5 * lu).exp()),
        # Pearson chi^2: sum (p - q)^2 / q ;  Neyman chi^2: sum (p - q)^2 / p
        "pearson": FDivergence("pearson", lambda u: (u - 1) ** 2, lambda lu: 1.0 - (2 * lu).exp(),
                               lambda lu: 2.0 * (2 * lu).exp()),
        "neyman": FDivergence("neyman", lambda u: (1 - u) ** 2 / u, lambda lu: 2.0 * (-lu).exp() - 2.0,
                              lambda lu: 2.0 * (-lu).exp()),
        # alpha-divergence (Amari): f(u) = (u^a - a u - (1 - a)) / (a (a - 1)), a not in {0, 1}
        "alpha": FDivergence(
            "alpha", lambda u: (u ** a - a * u - (1 - a)) / (a * (a - 1)),
            lambda lu: -((a * lu).exp() - 1.0) / a, lambda lu: (a * lu).exp()),
    }


DIVERGENCES = ("fkl", "rkl", "jeffrey", "js", "hellinger", "pearson", "neyman", "alpha")


def check_divergence(name: str, alpha: float) -> None:
    from fewstep.registry import lookup

    lookup("divergence", name, {k: k for k in DIVERGENCES})
    if name == "alpha" and alpha in (0.0, 1.0):
        raise ValueError("alpha-divergence needs alpha not in {0, 1} (use rkl / fkl for those limits)")


def f_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, name: str, beta: float = 0.0,
                 alpha: float = 0.5) -> torch.Tensor:
    """D_f(softmax(p_logits) || softmax(q_logits)) per position (sum over the last axis), float64."""
    p = torch.softmax(p_logits.double(), -1)
    q = torch.softmax(q_logits.double(), -1)
    u = p / q
    return (q * _f_divergences(beta, alpha)[name].f(u)).sum(-1)


# ------------------------------------------------------------------ continuous: f-distill's density-ratio weighting
# f-distill (Xu et al. 2025, Thm. 1): with the same convention D_f(p || q_theta) = E_q[f(p / q)], p = teacher, the
# generator gradient is DMD's score difference weighted per sample by h(r) = r^2 f''(r) at r = p(x_t) / q(x_t).
# RKL gives h = 1: DMD / DMD2. Less mode-seeking divergences weight up samples the teacher finds likelier.


def density_ratio_weights(log_ratio: torch.Tensor, name: str, beta: float = 0.0, alpha: float = 0.5,
                          ratio_range: tuple[float, float] = (0.1, 20.0),
                          groups: torch.Tensor | None = None) -> torch.Tensor:
    """h(r) per sample with f-distill's two normalisations (as in NVIDIA FastGen's implementation): r = exp(log_ratio)
    clipped to `ratio_range`, then divided by its mean over the samples of its group (noise-level bin) when `groups`
    is given; h scaled to mean 1 over the batch, so the DM gradient keeps DMD's scale."""
    lo, hi = ratio_range
    r = log_ratio.double().clamp(math.log(lo), math.log(hi)).exp()
    if groups is not None:
        sums = torch.zeros(int(groups.max()) + 1, dtype=r.dtype, device=r.device).index_add_(0, groups, r)
        counts = torch.bincount(groups, minlength=len(sums)).to(r.dtype)
        r = r / (sums / counts.clamp(min=1))[groups]
    h = _f_divergences(beta, alpha)[name].weight_log(r.log())
    return (h / h.mean()).to(log_ratio.dtype)


def divergence_logit_grad(teacher_logits: torch.Tensor, aux_logits: torch.Tensor, name: str = "fkl",
                          beta: float = 0.0, alpha: float = 0.5, closed_form: bool = True) -> torch.Tensor:
    """g = d D(p_teacher || softmax(z)) / dz at z = aux_logits, per token (DiMO Eq. 7 and App. A.2).

    closed_form: FKL / RKL / Jeffrey use DiMO's Eq. 14-16 (what the official code implements); every other
    divergence, or closed_form=False, uses the general f-divergence formula above.
    """
    if closed_form and name in ("fkl", "rkl", "jeffrey"):
        b = {"fkl": 0.0, "rkl": 1.0, "jeffrey": beta}[name]
        lp = torch.log_softmax(teacher_logits.float(), -1)
        lq = torch.log_softmax(aux_logits.float(), -1)
        q = lq.exp()
        g = torch.zeros_like(q)
        if b != 1.0:
            g = g + (1.0 - b) * (q - lp.exp())  # FKL: p_aux - p_teacher
        if b != 0.0:
            rkl = (q * (lq - lp)).sum(-1, keepdim=True)
            g = g + b * q * (lq - lp - rkl)  # RKL: p_aux (log p_aux - log p_teacher - RKL)
        return g
    lp = torch.log_softmax(teacher_logits.double(), -1)
    lq = torch.log_softmax(aux_logits.double(), -1)
    q = lq.exp()
    hq = _f_divergences(beta, alpha)[name].h_log(lp - lq)
    g = q * (hq - (q * hq).sum(-1, keepdim=True))
    return g.to(aux_logits.dtype)

import pytest
import torch

from fewstep.methods.common.distribution_matching import (
    DIVERGENCES, _f_divergences, density_ratio_weights, divergence_logit_grad, f_divergence, surrogate_loss,
)

CASES = [("fkl", 0.0, 0.5), ("rkl", 0.0, 0.5), ("jeffrey", 0.5, 0.5), ("jeffrey", -0.2, 0.5), ("js", 0.0, 0.5),
         ("hellinger", 0.0, 0.5), ("pearson", 0.0, 0.5), ("neyman", 0.0, 0.5), ("alpha", 0.0, 0.5),
         ("alpha", 0.0, -1.0), ("alpha", 0.0, 2.0)]


def _logits(seed, shape=(3, 5, 11), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def test_every_divergence_is_covered():
    assert {c[0] for c in CASES} == set(DIVERGENCES)


@pytest.mark.parametrize("name,beta,alpha", CASES)
@pytest.mark.parametrize("closed_form", [True, False])
def test_logit_gradient_equals_autograd(name, beta, alpha, closed_form):
    """g must be d D(p_teacher || softmax(z)) / dz, computed by autograd from the divergence itself."""
    zt, z = _logits(0), _logits(1).requires_grad_(True)
    f_divergence(zt, z, name, beta, alpha).sum().backward()
    g = divergence_logit_grad(zt, z.detach(), name, beta, alpha, closed_form=closed_form)
    assert torch.allclose(g.double(), z.grad, atol=1e-5, rtol=1e-4)
    assert z.grad.abs().max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("name,beta,alpha", CASES)
def test_gradient_vanishes_when_aux_equals_teacher(name, beta, alpha):
    z = _logits(2)
    assert divergence_logit_grad(z, z.clone(), name, beta, alpha).abs().max() < 1e-6


def test_closed_forms_match_dimo_equations():
    zt, za = _logits(3), _logits(4)
    p, q = torch.softmax(zt, -1), torch.softmax(za, -1)
    assert torch.allclose(divergence_logit_grad(zt, za, "fkl").double(), q - p, atol=1e-6)
    rkl = (q * (q.log() - p.log())).sum(-1, keepdim=True)
    assert torch.allclose(divergence_logit_grad(zt, za, "rkl").double(), q * (q.log() - p.log() - rkl), atol=1e-6)
    mix = divergence_logit_grad(zt, za, "jeffrey", beta=0.3).double()
    assert torch.allclose(mix, 0.7 * (q - p) + 0.3 * q * (q.log() - p.log() - rkl), atol=1e-6)


def test_known_divergence_values():
    p = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    q = torch.tensor([0.9, 0.1], dtype=torch.float64).log()
    pp, qq = p.exp(), q.exp()
    assert f_divergence(p, q, "fkl") == pytest.approx(float((pp * (pp / qq).log()).sum()))
    assert f_divergence(p, q, "pearson") == pytest.approx(float(((pp - qq) ** 2 / qq).sum()))
    assert f_divergence(p, q, "hellinger") == pytest.approx(float(((pp.sqrt() - qq.sqrt()) ** 2).sum()))
    m = (pp + qq) / 2
    js = 0.5 * (pp * (pp / m).log()).sum() + 0.5 * (qq * (qq / m).log()).sum()
    assert f_divergence(p, q, "js") == pytest.approx(float(js))


def test_surrogate_gradient_is_scaled_g():
    x = torch.randn(4, 6, requires_grad=True)
    g = torch.randn(4, 6)
    g[0, 0] = float("nan")
    surrogate_loss(x, g, scale=0.25).backward()
    expected = 0.25 * torch.nan_to_num(g, nan=0.0)
    assert torch.allclose(x.grad, expected)


@pytest.mark.parametrize("name,beta,alpha", CASES)
def test_density_ratio_weight_is_r2_f2_of_the_divergence(name, beta, alpha):
    """f-distill's weighting h(r) = r^2 f''(r), f'' taken by autograd from f itself; scaled to batch mean 1."""
    log_r = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    u = log_r.exp().requires_grad_(True)
    (d1,) = torch.autograd.grad(_f_divergences(beta, alpha)[name].f(u).sum(), u, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), u)
    h = u.detach() ** 2 * d2
    assert torch.allclose(density_ratio_weights(log_r, name, beta, alpha, ratio_range=(0.01, 100.0)), h / h.mean())


def test_density_ratio_weights_clip_the_ratio_and_normalise_it_per_group():
    w = density_ratio_weights(torch.tensor([-5.0, 0.0, 5.0]), "fkl", ratio_range=(0.1, 20.0))  # h = r: 0.1, 1, 20
    assert torch.allclose(w, torch.tensor([0.1, 1.0, 20.0]) / (21.1 / 3))
    # r = 1, 3 in group 0 and 2, 6 in group 1: each divided by its group's mean -> 0.5, 1.5, 0.5, 1.5
    w = density_ratio_weights(torch.tensor([1.0, 3.0, 2.0, 6.0]).log(), "fkl", groups=torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.5, 1.5]))
    js = density_ratio_weights(torch.tensor([1.0, 3.0, 2.0, 6.0]).log(), "js", groups=torch.tensor([0, 0, 1, 1]))
    h = torch.tensor([0.5, 1.5, 0.5, 1.5]) / torch.tensor([1.5, 2.5, 1.5, 2.5])  # r / (1 + r) of the normalised r
    assert torch.allclose(js, h / h.mean())
    assert torch.equal(density_ratio_weights(torch.randn(7), "rkl"), torch.ones(7))  # DMD: every sample alike

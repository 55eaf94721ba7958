"""The synthetic distribution's exact quantities, checked against brute-force enumeration."""

import itertools

import torch

from fewstep.data.synthetic import ExactTeacher, MarkovMixture


def _all_sequences(dist):
    return torch.tensor(list(itertools.product(range(dist.vocab_size), repeat=dist.length)))


def test_probabilities_normalise_and_entropy_is_exact():
    dist = MarkovMixture(num_classes=2, vocab_size=3, length=5, seed=3)
    xs = _all_sequences(dist)
    for c in range(2):
        lp = dist.log_prob(xs, torch.full((len(xs),), c))
        p = lp.exp()
        assert abs(float(p.sum()) - 1.0) < 1e-10
        assert abs(float(-(p * lp).sum()) - dist.entropy(c)) < 1e-9


def test_pair_marginals_match_enumeration():
    dist = MarkovMixture(num_classes=1, vocab_size=3, length=4, seed=5)
    xs = _all_sequences(dist)
    p = dist.log_prob(xs, torch.zeros(len(xs), dtype=torch.long)).exp()
    pairs = dist.pair_marginals(0)
    for i in range(4):
        for j in range(i + 1, 4):
            brute = torch.zeros(3, 3, dtype=torch.float64)
            brute.index_put_((xs[:, i], xs[:, j]), p, accumulate=True)
            assert torch.allclose(pairs[i, j], brute, atol=1e-12)


def test_posterior_matches_enumeration():
    dist = MarkovMixture(num_classes=2, vocab_size=3, length=5, seed=7)
    xs = _all_sequences(dist)
    g = torch.Generator().manual_seed(0)
    mask_id = dist.vocab_size
    for trial in range(20):
        c = trial % 2
        x = dist.sample(torch.tensor([c]), g)[0]
        masked = torch.rand(5, generator=g) < 0.5
        xt = torch.where(masked, torch.full_like(x, mask_id), x)
        post = dist.posterior(xt[None], torch.tensor([c]), mask_id)[0]
        keep = ((xs == x) | masked).all(1)  # sequences consistent with the observed tokens
        p = dist.log_prob(xs[keep], torch.full((int(keep.sum()),), c)).exp()
        for i in range(5):
            brute = torch.zeros(3, dtype=torch.float64).index_add_(0, xs[keep][:, i], p)
            assert torch.allclose(post[i], brute / brute.sum(), atol=1e-10)


def test_exact_teacher_null_class_is_class_average():
    dist = MarkovMixture(num_classes=3, vocab_size=4, length=6, seed=1)
    net = ExactTeacher(dist)
    xt = torch.full((1, 6), dist.vocab_size)
    uncond = net(xt, torch.tensor([3])).exp()
    avg = torch.stack([net(xt, torch.tensor([c])).exp() for c in range(3)]).mean(0)
    assert torch.allclose(uncond, avg, atol=1e-6)

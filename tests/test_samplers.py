import math

import pytest
import torch

from fewstep.data.synthetic import ExactTeacher, MarkovMixture
from fewstep.metrics.exact import exact_metrics
from fewstep.samplers.masked import (
    categorical_from_uniform, cfg_scale_at, guided_logits, hybrid_init, maskgit_sample, onestep_sample,
    remove_label_smoothing,
)
from fewstep.samplers.noise import SeedStream, parse_seeds


def _sample(net, dist, labels, steps, **kw):
    return maskgit_sample(net, labels, list(range(len(labels))), seq_len=dist.length, mask_id=dist.vocab_size,
                          null_class=dist.num_classes, steps=steps, **kw)


def test_sampler_converges_to_exact_distribution_as_steps_grow():
    """With the exact posterior as the network and random re-masking, L steps of one token each are exact
    ancestral sampling; fewer steps sample several tokens independently and miss their dependencies."""
    dist = MarkovMixture()
    net = ExactTeacher(dist)
    n = 3000
    labels = torch.arange(n) % dist.num_classes
    kl, gap = {}, {}
    for steps in (1, 4, dist.length):
        x = _sample(net, dist, labels, steps, schedule="linear", remask="random")
        m = exact_metrics(dist, x, labels)
        kl[steps], gap[steps] = m["pair_kl"], m["nll_gap"]
    truth = exact_metrics(dist, dist.sample(labels, torch.Generator().manual_seed(9)), labels)["pair_kl"]
    assert kl[1] > kl[4] > kl[dist.length]
    assert kl[1] > 5 * truth  # one step: product of marginals, clearly wrong
    assert kl[dist.length] < 1.3 * truth  # exact sampler: only finite-sample noise remains
    # mean -log p(x) of the samples approaches the exact entropy only for the exact sampler
    assert gap[1] > 10 and gap[4] > 2 and abs(gap[dist.length]) < 0.3


def test_confidence_remasking_is_mode_seeking():
    dist = MarkovMixture()
    labels = torch.arange(2000) % dist.num_classes
    x = _sample(ExactTeacher(dist), dist, labels, dist.length, schedule="linear", remask="confidence")
    assert exact_metrics(dist, x, labels)["nll_gap"] < -1.0  # more likely than typical samples


def test_sampler_reveals_exactly_the_scheduled_number_of_tokens():
    seen = []
    V, L, S = 5, 64, 8

    def net(tokens, labels, **_):
        seen.append(int((tokens[0] == V).sum()))
        return torch.zeros(tokens.shape[0], L, V)

    out = maskgit_sample(net, torch.zeros(2, dtype=torch.long), [0, 1], seq_len=L, mask_id=V, null_class=3,
                         steps=S, schedule="arccos")
    expected = [L] + [round((2 / math.pi) * math.acos(k / S) * L) for k in range(1, S)]
    assert seen == expected
    assert (out < V).all()


def test_samples_do_not_depend_on_batch_composition():
    dist = MarkovMixture()
    net = ExactTeacher(dist)
    labels = torch.tensor([0, 1, 2, 3, 1])
    seeds = [10, 11, 12, 13, 14]
    kw = dict(seq_len=dist.length, mask_id=dist.vocab_size, null_class=dist.num_classes, steps=4, cfg_scale=1.5)
    full = maskgit_sample(net, labels, seeds, **kw)
    part = maskgit_sample(net, labels[2:4], seeds[2:4], **kw)
    assert torch.equal(full[2:4], part)
    again = maskgit_sample(net, labels, seeds, **kw)
    assert torch.equal(full, again)
    other = maskgit_sample(net, labels, [s + 100 for s in seeds], **kw)
    assert not torch.equal(full, other)
    assert maskgit_sample(net, labels, seeds, **{**kw, "cfg_scale": 0.0}).shape == full.shape  # 0: unconditional
    with pytest.raises(ValueError, match="cfg must be >= 0"):
        maskgit_sample(net, labels, seeds, **{**kw, "cfg_scale": -1.0})


def test_guidance_formula_and_ramp():
    def net(tokens, labels, **_):
        # conditional logits = 2, unconditional (null class 9) = 1
        return torch.where(labels[:, None, None] == 9, 1.0, 2.0).expand(len(labels), 3, 4)

    x, y = torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1])
    assert torch.allclose(guided_logits(net, x, y, 1.0, 9), torch.full((2, 3, 4), 2.0))
    assert torch.allclose(guided_logits(net, x, y, 3.0, 9), torch.full((2, 3, 4), 1.0 + 3.0 * 1.0))
    per_sample = guided_logits(net, x, y, torch.tensor([1.0, 3.0]), 9)  # DiMO's ramped teacher guidance
    assert torch.allclose(per_sample[0], torch.full((3, 4), 2.0)) and torch.allclose(per_sample[1], torch.full((3, 4), 4.0))
    assert cfg_scale_at(0, 5, 3.0, "linear") == 1.0
    assert cfg_scale_at(4, 5, 3.0, "linear") == 3.0
    assert cfg_scale_at(2, 5, 3.0, "constant") == 3.0


def test_remove_label_smoothing_inverts_smoothing_and_clips_below_the_floor():
    p = torch.softmax(torch.randn(50, 17) * 3, -1)
    eps = 0.1
    smoothed = (1 - eps) * p + eps / 17  # what a model trained with label smoothing eps predicts for data p
    assert torch.allclose(remove_label_smoothing(smoothed, eps), p, atol=1e-6)
    assert torch.equal(remove_label_smoothing(smoothed, 0.0), smoothed)
    below = torch.tensor([0.9, 0.095, 0.005])  # 0.005 < eps / V = 0.0333: the model puts no data mass there
    out = remove_label_smoothing(below, eps)
    assert out[2] == 0 and torch.allclose(out.sum(), torch.tensor(1.0))
    assert torch.allclose(out[:2] / out[:2].sum(), (below[:2] - eps / 3) / (below[:2] - eps / 3).sum())


def test_desmooth_samples_the_unsmoothed_distribution():
    """A net that predicts token 1 smoothed by eps: plain sampling picks other tokens about eps (V-1)/V of the
    time; with the smoothing removed it always picks token 1."""
    V, L, eps = 5, 16, 0.2

    def net(tokens, labels, **_):
        p = torch.full((V,), eps / V)
        p[1] += 1 - eps
        return p.log().expand(tokens.shape[0], L, V)

    labels = torch.zeros(400, dtype=torch.long)
    kw = dict(seq_len=L, mask_id=V, null_class=1, steps=4, remask="random")
    plain = maskgit_sample(net, labels, list(range(400)), **kw)
    assert abs(float((plain != 1).float().mean()) - eps * (V - 1) / V) < 0.02
    assert (maskgit_sample(net, labels, list(range(400)), desmooth=eps, **kw) == 1).all()


def test_categorical_from_uniform_matches_probabilities():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    u = (torch.arange(100000) + 0.5) / 100000
    idx = categorical_from_uniform(probs.expand(len(u), 4), u)
    freq = torch.bincount(idx, minlength=4).float() / len(u)
    assert torch.allclose(freq, probs, atol=1e-4)


def test_hybrid_init_has_exact_mask_count():
    s = SeedStream(range(50))
    u = s.rand(2, 40)
    for r in (0.0, 0.2, 0.6, 1.0):
        x = hybrid_init(u[:, 0], u[:, 1], vocab_size=17, mask_id=17, r_init=r)
        assert ((x == 17).sum(1) == max(1, round(r * 40))).all()
        assert (x[x != 17] < 17).all()
    per_row = torch.linspace(0.1, 0.9, 50)
    x = hybrid_init(u[:, 0], u[:, 1], 17, 17, per_row)
    assert torch.equal((x == 17).sum(1), torch.round(per_row * 40).long().clamp(1, 40))


def test_onestep_sample_is_per_seed():
    from fewstep.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig

    torch.manual_seed(0)
    net = MaskedTransformer(MaskedTransformerConfig(vocab_size=7, seq_len=9, num_classes=3, dim=16, depth=1,
                                                    heads=2)).eval()
    kw = dict(seq_len=9, vocab_size=7, mask_id=7, embed_dim=16, r_init=0.5, sigma_init=0.3)
    a = onestep_sample(net, torch.tensor([0, 1, 2]), [4, 5, 6], **kw)
    b = onestep_sample(net, torch.tensor([1]), [5], **kw)
    assert torch.equal(a[1:2], b)


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]

import copy
import json
import math

import pytest
import torch
from torch import nn

from fewstep.data.toy2d import GaussianRing, ring_metrics
from fewstep.errors import FewstepError
from fewstep.methods.base import Phase, StepContext
from fewstep.methods.dmd2 import DMD2, DMD2Config
from fewstep.methods.msd import MSDConfig, partition_classes, route
from fewstep.processes.gaussian import karras_sigmas
from fewstep.samplers.gaussian import edm_sample, fewstep_sample, guided_denoise
from fewstep.samplers.noise import SeedStream
from fewstep.tokenizers import DataConfig


class ExactDenoiser(nn.Module):
    """D(x; sigma) of a (shifted) Gaussian ring, class-conditional; null class 8 = the whole mixture."""

    def __init__(self, ring, shift=(0.0, 0.0)):
        super().__init__()
        self.ring = copy.deepcopy(ring)
        self.ring.means = self.ring.means + torch.tensor(shift, dtype=torch.float64)
        self.calls = 0

    def forward(self, x, sigma, labels, **_):
        self.calls += 1
        out = torch.empty_like(x)
        for s in sigma.unique():
            rows = sigma == s
            lab = labels[rows]
            cond = self.ring.denoised(x[rows], float(s), lab.clamp(max=7))
            unc = self.ring.denoised(x[rows], float(s), None)
            out[rows] = torch.where((lab == 8)[:, None], unc, cond)
        return out


def _bare_dmd2(**cfg):
    m = DMD2(DMD2Config(**cfg), DataConfig(name="ring2d"))
    m.levels = karras_sigmas(1000).flip(0).float()
    m.t_info = {"null_class": 8}
    return m


def _ctx(nets):
    return StepContext(0, Phase("probe", None, trains=()), 0, torch.device("cpu"), nets, nets, lambda s: {})


def test_dm_gradient_is_zero_when_critic_equals_teacher():
    ring = GaussianRing()
    m = _bare_dmd2()
    x, y = ring.sample(torch.arange(64) % 8) + 0.3, torch.arange(64) % 8
    g = m.dm_grad(_ctx({"teacher": ExactDenoiser(ring), "critic": ExactDenoiser(ring)}), "critic", x, y)
    assert g.abs().max() < 1e-6


def test_dm_gradient_points_along_the_score_difference():
    """g = (D_fake - D_real) / W = sigma^2 (s_fake - s_real) / W: the generator moves along s_real - s_fake."""
    ring = GaussianRing()
    fake = ExactDenoiser(ring, shift=(0.5, -0.3))
    m = _bare_dmd2()
    torch.manual_seed(0)
    x, y = ring.sample(torch.arange(256) % 8), torch.arange(256) % 8
    # fix the noise level so the analytic scores can be evaluated at the same x_t
    m._level = lambda b, lo, hi, device: torch.full((b,), 0.7)
    torch.manual_seed(1)
    g = m.dm_grad(_ctx({"teacher": ExactDenoiser(ring), "critic": fake}), "critic", x, y)
    torch.manual_seed(1)
    x_t = x + 0.7 * torch.randn_like(x)
    diff = fake.ring.score(x_t, 0.7, y) - ring.score(x_t, 0.7, y)
    cos = torch.nn.functional.cosine_similarity(g, diff, dim=1)
    assert (cos > 0.999).all()


class GaussianDenoiser(nn.Module):
    """D(x; sigma) of N(0, std^2 I): shrinks x by std^2 / (std^2 + sigma^2)."""

    def __init__(self, std):
        super().__init__()
        self.std = std

    def forward(self, x, sigma, labels, **_):
        return x * (self.std**2 / (self.std**2 + sigma**2))[:, None]


def test_teacher_sigma_scale_k_makes_a_k_times_wider_student_the_dm_fixed_point():
    """Telling the teacher sigma / k widens its Gaussian target by exactly k at every level: a student k times wider
    than the teacher gets no DM gradient, and the unscaled DM pushes that student back in (a positive x . g)."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 2) * 0.6, torch.arange(256) % 8
    nets = {"teacher": GaussianDenoiser(0.5), "critic": GaussianDenoiser(0.5 * 1.2)}
    g = _bare_dmd2(teacher_sigma_scale=1.2).dm_grad(_ctx(nets), "critic", x, y)
    assert g.abs().max() < 1e-3  # float32 rounding; unscaled, |g| averages 0.07 here
    g = _bare_dmd2().dm_grad(_ctx(nets), "critic", x, y)
    assert (x * g).sum(1).mean() > 0.02  # the surrogate moves x along -g: towards 0, the narrower teacher


class RatioCritic(ExactDenoiser):
    """A fake score with a GAN head whose logit is a known function of its input."""

    def with_logits(self, x, sigma, labels):
        return self(x, sigma, labels), 3.0 * (x[:, 0] - x[:, 1])


def test_f_divergences_weight_each_dm_gradient_by_the_heads_density_ratio_at_x_t():
    ring = GaussianRing()
    critic = RatioCritic(ring, shift=(0.5, -0.3))
    x, y = ring.sample(torch.arange(64) % 8), torch.arange(64) % 8
    grads, logs = {}, {}
    for div in ("rkl", "js", "fkl"):
        torch.manual_seed(1)
        logs[div] = {}
        grads[div] = _bare_dmd2(divergence=div, ratio_bins=0).dm_grad(_ctx({"teacher": ExactDenoiser(ring), "critic": critic}),
                                                        "critic", x, y, logs[div])
    torch.manual_seed(1)  # the same level and noise, so the same x_t the head was asked about
    sigma = _bare_dmd2()._level(64, 0.02, 0.98, "cpu")
    x_t = x + sigma[:, None] * torch.randn_like(x)
    log_r = (3.0 * (x_t[:, 0] - x_t[:, 1])).clamp(math.log(0.1), math.log(20.0))
    for div, h in (("js", torch.sigmoid(log_r)), ("fkl", log_r.exp())):
        assert torch.allclose(grads[div], grads["rkl"] * (h / h.mean())[:, None], atol=1e-6)
        assert logs[div]["h_max"] == pytest.approx(float(h.max() / h.mean()))
    assert logs["rkl"] == {}
    assert not torch.allclose(grads["js"], grads["rkl"], atol=1e-3)  # the weights are not uniform here
    with pytest.raises(ValueError, match="set gan=true"):
        DMD2Config(divergence="js", gan=False)


def test_density_ratio_bins_split_the_dm_levels_evenly():
    m = _bare_dmd2(divergence="js", ratio_bins=10)  # DM indices [20, 980): 96 per bin
    idx = torch.tensor([20, 115, 116, 500, 979])
    assert m._dm_bin(m.levels[idx]).tolist() == [0, 0, 1, 5, 9]
    assert _bare_dmd2(ratio_bins=0)._dm_bin(m.levels[idx]) is None


def test_backward_simulation_feeds_the_generators_own_rollout():
    m = _bare_dmd2(gen_steps=4)
    m.shape, m.gen_sigmas = (2,), [80.0, 2.5, 0.6, 0.1]
    calls = []

    def gen(x, sigma, labels):
        assert not torch.is_grad_enabled()  # the rollout carries no gradient
        out = 0.5 * x + 1.0
        calls.append((x.clone(), float(sigma[0]), out.clone()))
        return out

    real = torch.full((16, 2), 100.0)
    seen_k = set()
    for seed in range(40):
        torch.manual_seed(seed)
        calls.clear()
        x_k, s_k, _ = m.generator_input(gen, torch.zeros(16, dtype=torch.long), real)
        k = len(calls)
        seen_k.add(k)
        assert float(s_k[0]) == pytest.approx(m.gen_sigmas[k]) and not x_k.requires_grad
        for j in range(1, k):  # each rollout input = previous output re-noised to the next level
            prev_out, (x_in, s, _) = calls[j - 1][2], calls[j]
            assert s == pytest.approx(m.gen_sigmas[j])
            assert 0.3 < float(((x_in - prev_out) / s).std()) < 2.5
        if k:
            assert (x_k - calls[-1][2]).abs().mean() < 3 * m.gen_sigmas[k]  # built from the rollout...
            assert (x_k - real).abs().mean() > 50  # ...not from real data
    assert seen_k == {0, 1, 2, 3}


def test_step_anchor_regresses_a_steps_output_on_the_teachers_ode_from_that_steps_input(tmp_path):
    ring, y, seeds = GaussianRing(), torch.arange(64) % 8, list(range(64))
    teacher, m = ExactDenoiser(ring), _bare_dmd2(gen_steps=4, anchor_weight=1.0, anchor_steps=6)
    x_in = SeedStream(seeds).randn(2).double() * 0.6  # pure noise at 0.6: the ODE from it is edm_sample's
    s_in = torch.full((64,), 0.6)
    target = edm_sample(teacher, y, seeds, (2,), steps=6, sigma_max=0.6, null_class=8)
    assert float(m.anchor_error(teacher, target, x_in.float(), s_in, y)) < 1e-10
    one_shot = teacher(x_in.float(), s_in, y)  # the teacher's denoiser is not its 6-step ODE
    err = float(m.anchor_error(teacher, one_shot, x_in.float(), s_in, y))
    assert err > 1e-4 and err == pytest.approx(float(((one_shot - target) ** 2).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="the anchor is for the steps after the first"):
        DMD2Config(anchor_weight=1.0)

    from fewstep.cli.commands import train_run

    from helpers import train_tiny_edm

    run = train_run("dmd2", {"name": "digits"}, str(tmp_path / "d"), extra_method={"teacher": str(
        train_tiny_edm(tmp_path / "edm"))}, overrides=["train.steps=8", "train.batch_size=8", "train.log_every=1",
                                                      "method.critic_updates=1", "method.gen_steps=4",
                                                      "method.anchor_weight=1.0", "method.anchor_steps=2"])
    logs = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    anchored = [r["generator/anchor"] for r in logs if "generator/anchor" in r]
    assert 0 < len(anchored) < len(logs) and min(anchored) > 0  # logged on the steps after the first only


def test_without_backward_simulation_inputs_are_noised_real_data():
    m = _bare_dmd2(gen_steps=4, backward_simulation=False)
    m.shape, m.gen_sigmas = (2,), [80.0, 2.5, 0.6, 0.1]
    real = torch.full((4096, 2), 100.0)
    for seed in range(20):
        torch.manual_seed(seed)
        x_k, s_k, _ = m.generator_input(lambda *a: pytest.fail("generator must not run"), torch.zeros(4096).long(), real)
        if float(s_k[0]) < 80.0:
            assert abs(float(((x_k - real) / s_k[0]).std()) - 1.0) < 0.05


def test_msd_partition_and_routing():
    for classes, k in [(10, 1), (10, 2), (10, 4), (8, 4), (10, 10)]:
        parts = partition_classes(classes, k)
        flat = sorted(c for p in parts for c in p)
        assert flat == list(range(classes)) and len(parts) == k
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        owner = route(torch.arange(classes), parts)
        for c in range(classes):  # every class goes to exactly the one student that owns it
            assert [i for i, p in enumerate(parts) if c in p] == [int(owner[c])]
    with pytest.raises(ValueError):
        partition_classes(3, 4)


def test_edm_heun_sampler_with_exact_denoiser_recovers_the_ring():
    ring = GaussianRing()
    net = ExactDenoiser(ring)
    labels = torch.arange(800) % 8
    x = edm_sample(net, labels, list(range(800)), (2,), steps=35, solver="heun", null_class=8)
    ref = ring.sample(torch.arange(4000) % 8, torch.Generator().manual_seed(0))
    m = ring_metrics(ring, x, labels, ref)
    assert m["precision"] > 0.97 and m["class_acc"] > 0.97 and m["modes_hit"] == 8 and m["energy"] < 0.01
    assert net.calls == 2 * 35 - 1  # Heun: two evaluations per step except the last
    # unconditional, one Euler step lands on the mixture mean, between the modes
    null = torch.full_like(labels, 8)
    one = edm_sample(ExactDenoiser(ring), null, list(range(800)), (2,), steps=1, solver="euler", null_class=8)
    assert ring_metrics(ring, one, labels, ref)["precision"] < 0.05


def test_noise_scale_multiplies_the_starting_noise_and_nothing_else():
    sd = 0.5  # N(0, sd^2) data: its exact denoiser makes the probability-flow ODE linear in the starting noise
    net = GaussianDenoiser(sd)
    labels, seeds = torch.zeros(2000, dtype=torch.long), list(range(2000))
    base = edm_sample(net, labels, seeds, (2,), steps=32)
    wide = edm_sample(net, labels, seeds, (2,), steps=32, noise_scale=1.3)
    assert abs(float(base.std()) - sd) < 0.02  # (9 Heun steps: 0.63, a coarse solver widens)
    assert torch.allclose(wide, 1.3 * base, rtol=1e-5, atol=1e-6)
    assert torch.equal(edm_sample(net, labels, seeds, (2,), steps=32, noise_scale=1.0), base)
    # few-step generator x0 = x / sigma: its output is the scaled first noise plus the unscaled re-noising
    gen = lambda x, s, y: x / s[:, None]  # noqa: E731
    one, two = (fewstep_sample(gen, labels, seeds, (2,), [80.0, 1.0], noise_scale=k) for k in (1.0, 2.0))
    z = SeedStream(seeds, labels.device).randn(2, 2)
    assert torch.allclose(two - one, z[:, 0], atol=1e-5) and torch.allclose(one - z[:, 0], z[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="noise_scale must be > 0"):
        fewstep_sample(gen, labels, seeds, (2,), [80.0], noise_scale=0.0)


def test_sigma_scale_k_solves_the_ode_of_k_times_wider_gaussian_data():
    """Told sigma / k, the exact denoiser of N(0, sd^2) is the exact denoiser of N(0, (k sd)^2) at sigma."""
    sd, k = 0.5, 1.2
    net = GaussianDenoiser(sd)
    labels, seeds = torch.zeros(2000, dtype=torch.long), list(range(2000))
    scaled = edm_sample(net, labels, seeds, (2,), steps=32, sigma_scale=k)
    assert torch.allclose(scaled, edm_sample(GaussianDenoiser(k * sd), labels, seeds, (2,), steps=32), atol=1e-5)
    assert abs(float(scaled.std()) - k * sd) < 0.025
    with pytest.raises(ValueError, match="sigma_scale must be > 0"):
        edm_sample(net, labels, seeds, (2,), steps=4, sigma_scale=-1.0)


def test_guidance_interval_guides_only_the_levels_inside_it():
    torch.manual_seed(0)
    ring = GaussianRing()
    net = ExactDenoiser(ring)
    x, y = ring.sample(torch.arange(8) % 8) + 0.5, torch.arange(8) % 8
    sigma = torch.tensor([0.7, 1.0, 2.0, 4.0] * 2)
    cond, guided = guided_denoise(net, x, sigma, y, 1.0, 8), guided_denoise(net, x, sigma, y, 2.0, 8)
    assert (guided - cond).abs().amin(dim=1).min() > 1e-3  # guidance moves every sample
    part = guided_denoise(net, x, sigma, y, 2.0, 8, (1.0, 2.0))  # lo excluded, hi included
    inside = (sigma > 1.0) & (sigma <= 2.0)
    assert torch.equal(part[inside], guided[inside]) and torch.equal(part[~inside], cond[~inside])
    net.calls = 0  # no level inside: the conditional model alone, one call
    assert torch.equal(guided_denoise(net, x, sigma, y, 2.0, 8, (5.0, 80.0)), cond) and net.calls == 1
    # a sampler guided on an interval that holds every one of its levels is the fully guided sampler
    labels, seeds = torch.arange(16) % 8, list(range(16))
    full = edm_sample(net, labels, seeds, (2,), steps=6, cfg_scale=1.5, null_class=8)
    assert torch.equal(edm_sample(net, labels, seeds, (2,), steps=6, cfg_scale=1.5, null_class=8,
                                  cfg_interval=(0.0, 80.0)), full)
    assert not torch.allclose(edm_sample(net, labels, seeds, (2,), steps=6, cfg_scale=1.5, null_class=8,
                                         cfg_interval=(0.3, 5.0)), full)
    with pytest.raises(ValueError, match=r"cfg_interval must be \[lo, hi\] with 0 <= lo < hi"):
        edm_sample(net, labels, seeds, (2,), steps=4, cfg_scale=1.5, null_class=8, cfg_interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="teacher_cfg_interval must be"):
        DMD2Config(teacher_cfg_interval=(1.0,))


def _trainer(tmp_path, *over, method="dmd2"):
    from fewstep.experiment import build_experiment
    from fewstep.trainer import Trainer

    setup = DMD2.contract_setup(tmp_path)
    exp = build_experiment(method, setup["data"], None,
                           [f"method.teacher={setup['method']['teacher']}", "train.batch_size=8", "train.lr=1e-2",
                            "train.warmup_steps=0", "method.critic_updates=1", *over])
    tr = Trainer(exp.method, exp.train, tmp_path / "run", exp.record, show_progress=False)
    tr._setup()
    tr.bad_steps = 0
    return tr


def _changed(before, tr):
    return {n: [k for k, v in tr.raw[n].state_dict().items() if not torch.equal(v, before[n][k])] for n in tr.raw}


def test_each_phase_changes_only_its_networks_and_gan_reaches_the_right_ones(tmp_path):
    tr = _trainer(tmp_path, "method.gan_weight_gen=1.0", "method.gan_weight_critic=1.0")
    gen_phase, critic_phase = tr.phase_list
    snap = lambda: {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in tr.raw.items()}  # noqa: E731
    before = snap()
    tr._run_phase(gen_phase, 0, {})
    ch = _changed(before, tr)
    assert ch["generator"] and not ch["critic"] and not ch["teacher"]
    before = snap()
    tr._run_phase(critic_phase, 0, {})
    ch = _changed(before, tr)
    assert not ch["generator"] and not ch["teacher"]
    assert any(k.startswith("head.") for k in ch["critic"]) and any(k.startswith("denoiser.") for k in ch["critic"])


def test_multiscale_gan_head_averages_one_head_per_feature_level_and_all_of_them_learn(tmp_path):
    tr = _trainer(tmp_path / "ms", "method.gan_head=multiscale", "method.gan_weight_critic=1.0")
    critic = tr.raw["critic"]
    x, sigma, y = torch.randn(8, *tr.method.shape), torch.full((8,), 0.5), torch.arange(8) % 10
    _, feats = critic.denoiser(x, sigma, y, features=True)
    assert [f.shape[1] for f in feats] == critic.denoiser.feature_channels == [16, 16, 8]
    assert [f.shape[-1] for f in feats] == [4, 4, 8]  # bottleneck, then the decoder's levels at 4x4 and 8x8
    want = (critic.head(feats[0]) + critic.level_heads[0](feats[1]) + critic.level_heads[1](feats[2])) / 3
    assert torch.allclose(critic.logits(x, sigma, y), want, atol=1e-6)
    before = {n: {k: v.clone() for k, v in tr.raw[n].state_dict().items()} for n in tr.raw}
    tr._run_phase(tr.phase_list[1], 0, {})  # the critic phase
    changed = set(_changed(before, tr)["critic"])
    assert {k for k in before["critic"] if k.startswith("level_heads.")} <= changed  # every level's head trains
    # the default critic keeps DMD2's one bottleneck head and its checkpoint names
    plain = _trainer(tmp_path / "plain").raw["critic"]
    assert plain.level_heads is None and set(plain.state_dict()) == {k for k in before["critic"]
                                                                       if not k.startswith("level_heads.")}
    with pytest.raises(ValueError, match="gan_head must be 'bottleneck' or 'multiscale'"):
        DMD2Config(gan_head="all")


def test_step_critic_reads_each_generator_steps_samples_with_that_steps_copy_of_the_classes(tmp_path):
    picked, seen = [], []
    for seed in range(8):
        tr = _trainer(tmp_path / str(seed), "method.gen_steps=4", "method.step_critic=true",
                      "method.gan_weight_critic=1.0", "train.weight_decay=0.0")
        m, critic = tr.method, tr.raw["critic"]
        rows = critic.denoiser.class_emb.weight
        assert torch.equal(rows, tr.raw["teacher"].class_emb.weight.repeat(4, 1))  # 4 steps x 11 labels, as the teacher
        inputs = m.generator_input
        m.generator_input = lambda *a, inputs=inputs: (lambda out: picked.append(out[2]) or out)(inputs(*a))
        critic.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(args[2].clone()))
        torch.manual_seed(seed)
        before = rows.detach().clone()
        phase = tr.phase_list[seed % 2]  # generator (DM and GAN terms), then critic (denoising and GAN)
        seen.clear()
        tr._run_phase(phase, 0, {})
        k = picked[-1]
        assert seen and all(bool((labels // 11 == k).all()) for labels in seen)  # real images' labels too
        moved = ((rows.detach() - before).abs().sum(1) > 0).nonzero().flatten()
        if phase.name == "critic":  # its update reaches only step k's class embeddings
            assert len(moved) and bool((moved // 11 == k).all())
        else:
            assert not len(moved)
    assert len(set(picked)) > 1
    with pytest.raises(ValueError, match="step_critic treats each generator step.s samples apart; it needs gen_steps > 1"):
        DMD2Config(step_critic=True)
    with pytest.raises(ValueError, match="step_critic needs teacher-sized critics"):  # a small critic is seeded by a
        MSDConfig(student_channels=(8, 16), tsm_steps=5, gen_steps=4, step_critic=True)  # student of 11 labels


def test_dm_below_input_draws_each_steps_dm_levels_up_to_its_input_level_only():
    torch.manual_seed(0)  # 4,096 draws reach the top of each range (a miss: about 1.4% unseeded)
    ring = GaussianRing()
    x, y = ring.sample(torch.arange(4096) % 8), torch.arange(4096) % 8
    levels = karras_sigmas(1000).flip(0).float()
    top = {}
    for below in (False, True):
        m = _bare_dmd2(gen_steps=4, dm_below_input=below)
        m.gen_sigmas = [float(levels[i]) for i in (999, 749, 499, 249)]  # DMD2's N = 4 levels
        seen = []
        critic = ExactDenoiser(ring)
        critic.forward = lambda x, sigma, labels, inner=critic.forward: seen.append(sigma) or inner(x, sigma, labels)
        for k in range(4):
            seen.clear()
            m.dm_grad(_ctx({"teacher": ExactDenoiser(ring), "critic": critic}), "critic", x, y, step=k)
            top[below, k] = float(seen[0].max())
    assert all(top[False, k] == pytest.approx(float(levels[979])) for k in range(4))  # dm_max 98% for every step
    # step k's inputs sit at grid index 999 - 250 k (80, 17.5, 2.52, 0.168): its DM levels stop there
    assert [top[True, k] for k in range(4)] == pytest.approx([float(levels[i]) for i in (979, 749, 499, 249)])
    # levels off the grid (step_sigmas): the highest grid level at or below each
    m = _bare_dmd2(gen_steps=2, dm_below_input=True, step_sigmas=(80.0, 0.35))
    m.gen_sigmas = [80.0, 0.35]
    assert [m._input_level(k) for k in range(2)] == [1000, int((levels <= 0.35).sum())]


def test_step_sigmas_set_the_few_step_generators_input_levels(tmp_path):
    m = _trainer(tmp_path, "method.gen_steps=4", "method.step_sigmas=[80,2.0,0.8,0.35]").method
    assert m.gen_sigmas == [80.0, 2.0, 0.8, 0.35] and m.info()["gen_sigmas"] == m.gen_sigmas
    seen = []

    def gen(x, sigma, labels):
        seen.append(float(sigma[0]))
        return torch.zeros_like(x)

    DMD2.generate({"generator": gen}, m.info(), torch.zeros(4, dtype=torch.long), list(range(4)))
    assert seen == pytest.approx([80.0, 2.0, 0.8, 0.35])  # the sampler runs the levels it was trained at
    for bad in ((80.0, 0.8, 2.0, 0.35), (80.0, 2.0, 0.8), (90.0, 2.0, 0.8, 0.35)):
        with pytest.raises(ValueError, match="step_sigmas must list gen_steps"):
            DMD2Config(gen_steps=4, step_sigmas=bad)


def test_gan_term_reaches_the_generator_only_when_enabled(tmp_path):
    def gen_update(gan):
        torch.manual_seed(0)
        tr = _trainer(tmp_path / str(gan), f"method.gan={gan}", "method.gan_weight_gen=10.0")
        w0 = {k: v.clone() for k, v in tr.raw["generator"].state_dict().items()}
        torch.manual_seed(1)
        tr._run_phase(tr.phase_list[0], 0, {})
        return {k: v - w0[k] for k, v in tr.raw["generator"].state_dict().items()}

    with_gan, without = gen_update(True), gen_update(False)
    assert any(not torch.allclose(with_gan[k], without[k]) for k in with_gan)


def test_msd_with_one_student_trains_exactly_like_dmd2(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.runs import load_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["train.steps=2", "train.batch_size=8", "train.warmup_steps=0", "method.critic_updates=2"]
    nets = {}
    for method, extra in (("dmd2", []), ("msd", ["method.students=1"])):
        run = train_run(method, {"name": "digits"}, str(tmp_path / method), overrides=over + extra,
                        extra_method={"teacher": teacher})
        nets[method] = load_run(run).nets
    dmd2, msd = nets["dmd2"]["generator"].state_dict(), nets["msd"]["generator0"].state_dict()
    assert all(torch.equal(dmd2[k], msd[k]) for k in dmd2)
    start = load_run(teacher).nets["model"].state_dict()
    assert not all(torch.equal(dmd2[k], start[k]) for k in dmd2)  # it did train


def test_msd_with_more_students_than_classes_says_how_many_fit(tmp_path):
    from fewstep.cli.commands import train_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    with pytest.raises(FewstepError, match="set method.students between 1 and 10"):
        train_run("msd", {"name": "digits"}, str(tmp_path / "msd"), overrides=["method.students=11"],
                  extra_method={"teacher": teacher})


def test_students_trained_as_separate_runs_merge_into_one_model_that_routes_to_each(tmp_path, capsys, monkeypatch):
    from fewstep.checkpoint import read_tensors
    from fewstep.cli.commands import train_run
    from fewstep.experiment import build_experiment
    from fewstep.hooks import eval_hook
    from fewstep.methods.msd import merge_student_runs
    from fewstep.runs import load_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["train.steps=2", "train.batch_size=8", "method.critic_updates=1", "method.students=2"]
    monkeypatch.setenv("FEWSTEP_QUIET", "0")
    runs = {k: train_run("msd", {"name": "digits"}, str(tmp_path / f"s{k}"), overrides=[*over, f"method.only_students=[{k}]"],
                         extra_method={"teacher": teacher}, hooks=[(1, eval_hook(n=20))]) for k in (0, 1)}
    assert not (runs[0] / "eval.jsonl").exists()  # half the classes cannot be scored; training went on regardless
    assert "step 1: not evaluated: class 5 belongs to student 1" in capsys.readouterr().err
    ckpt = load_run(runs[1]).path
    assert ckpt.name == "step_00000002"
    assert sorted(p.name for p in ckpt.glob("*_ema.safetensors")) == ["generator1_ema.safetensors"]
    start = load_run(teacher).nets["model"].state_dict()
    trained = read_tensors(ckpt / "generator1_ema.safetensors")
    assert not all(torch.equal(trained[k], start[k]) for k in start)
    method = build_experiment("msd", {"name": "digits"}, None, [*over, "method.only_students=[1]",
                                                                 f"method.teacher={teacher}"]).method
    method.build()
    streams = method.training_data()
    assert set(streams) == {"part1"} and set(streams["part1"]["labels"].tolist()) == {5, 6, 7, 8, 9}

    labels, seeds = torch.arange(10), list(range(10))
    with pytest.raises(FewstepError, match="belongs to student 1, which this run does not train"):
        load_run(runs[0]).generate(labels, seeds)
    merged = load_run(merge_student_runs([str(runs[1]), str(runs[0])], str(tmp_path / "merged")))
    out = merged.generate(labels, seeds)
    own = {k: load_run(runs[k]).generate(labels[5 * k:5 * k + 5], seeds[5 * k:5 * k + 5]) for k in (0, 1)}
    assert torch.equal(out[:5], own[0]) and torch.equal(out[5:], own[1])
    other = fewstep_sample(merged.nets["generator1"], labels[:5], seeds[:5], tuple(merged.info["shape"]),
                           merged.info["gen_sigmas"])
    assert not torch.allclose(out[:5], other)  # the students differ, so the routing above is what matched

    with pytest.raises(FewstepError, match="student 0 is trained in both"):
        merge_student_runs([str(runs[0]), str(runs[0])], str(tmp_path / "twice"))
    with pytest.raises(FewstepError, match=r"no run trains student\(s\) \[1\]"):
        merge_student_runs([str(runs[0])], str(tmp_path / "half"))
    with pytest.raises(FewstepError, match="between 0 and 1"):
        build_experiment("msd", {"name": "digits"}, None, [*over, "method.only_students=[2]",
                                                           f"method.teacher={teacher}"])


def test_tsm_runs_before_the_train_steps_of_the_dm_stage(tmp_path):
    from fewstep.cli.commands import train_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["train.steps=2", "train.batch_size=8", "train.log_every=1", "method.students=2",
            "method.student_channels=[8,8]", "method.tsm_steps=3", "method.critic_updates=1"]
    run = train_run("msd", {"name": "digits"}, str(tmp_path / "msd"), overrides=over,
                    extra_method={"teacher": teacher})
    logs = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5]
    assert all("tsm0/loss" in r and "generator0/loss" not in r for r in logs[:3])
    assert all("generator1/loss" in r and "tsm1/loss" not in r for r in logs[3:])
    assert (run / "checkpoints" / "step_00000005").is_dir()


def test_small_critics_start_the_dm_stage_as_copies_of_their_tsm_trained_students(tmp_path):
    tr = _trainer(tmp_path, "method.students=2", "method.student_channels=[8,8]", "method.tsm_steps=2",
                  "method.small_critics=true", method="msd")
    phase = {p.name: p for p in tr.phase_list}
    state = lambda m: {k: v.clone() for k, v in m.state_dict().items()}  # noqa: E731
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    gen, critic = tr.raw["generator0"], tr.raw["critic0"].denoiser
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert size(critic) == size(gen) < size(tr.raw["teacher"])
    for step in (0, 1):
        tr._run_phase(phase["tsm0"], step, {})
    after_tsm = state(gen)
    assert not same(state(critic), after_tsm)
    tr._run_phase(phase["generator0"], 2, {})  # the first DM step copies the student before updating it
    assert same(state(critic), after_tsm) and not same(state(gen), after_tsm)
    tr._run_phase(phase["critic0"], 2, {})
    trained = state(critic)
    tr._run_phase(phase["generator0"], 3, {})  # and only the first
    assert same(state(critic), trained) and not same(trained, after_tsm)


def test_init_from_a_run_inside_tsm_is_refused_and_at_its_end_seeds_the_small_critics(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    small = ["method.students=2", "method.student_channels=[8,8]", "method.tsm_steps=2", "method.small_critics=true"]
    run = train_run("msd", {"name": "digits"}, str(tmp_path / "msd"), extra_method={"teacher": teacher},
                    overrides=small + ["train.steps=1", "train.batch_size=8", "train.ckpt_every=1",
                                       "method.critic_updates=1", "train.keep_checkpoints=3"])
    build = lambda step: build_experiment("msd", {"name": "digits"}, None, [  # noqa: E731
        f"method.teacher={teacher}", *small, f"method.init_from={run / 'checkpoints' / f'step_{step:08d}'}"]).method.build()
    with pytest.raises(FewstepError, match="stopped at step 1, inside its 2 TSM steps; finish that run first"):
        build(1)
    for step, seeded in ((2, True), (3, False)):  # at step 3 the critics have had a DM step of their own
        nets = build(step)
        for k in (0, 1):
            gen, critic = nets[f"generator{k}"].module.state_dict(), nets[f"critic{k}"].module.denoiser.state_dict()
            assert all(torch.equal(gen[n], critic[n]) for n in gen) == seeded, (step, k)


def test_msd_students_start_from_a_dmd2_run_each_as_its_generator_and_critic(tmp_path):
    from safetensors.torch import load_file

    from fewstep.checkpoint import resolve_checkpoint
    from fewstep.cli.commands import train_run
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    run = train_run("dmd2", {"name": "digits"}, str(tmp_path / "dmd2"), extra_method={"teacher": teacher},
                    overrides=["train.steps=2", "train.batch_size=8", "train.ema_decay=0.5", "method.critic_updates=1"])
    ckpt = resolve_checkpoint(run)
    want = {"generator": load_file(str(ckpt / "generator_ema.safetensors")),
            "critic": load_file(str(ckpt / "critic.safetensors"))}
    build = lambda *o: build_experiment("msd", {"name": "digits"}, None, [  # noqa: E731
        f"method.teacher={teacher}", "method.students=3", f"method.init_from={run}", *o]).method.build()
    nets = build()
    for k in range(3):
        for role in ("generator", "critic"):
            got = nets[f"{role}{k}"].module.state_dict()
            assert set(got) == set(want[role]) and all(torch.equal(got[n], want[role][n]) for n in got), (role, k)
    assert any(not torch.equal(v, nets["teacher"].module.state_dict()[n]) for n, v in want["generator"].items())
    with pytest.raises(FewstepError, match="is a dmd2 run, whose networks are the teacher's size"):
        build("method.student_channels=[8,8]", "method.tsm_steps=1")
    with pytest.raises(FewstepError, match="holds a edm run; pass an msd or a dmd2 run"):
        build(f"method.init_from={teacher}")


def test_smaller_students_saved_before_small_critics_existed_resume_with_teacher_sized_critics(tmp_path):
    from fewstep.checkpoint import latest_checkpoint
    from fewstep.cli.commands import train_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["method.students=2", "method.student_channels=[8,8]", "method.tsm_steps=1", "train.batch_size=8",
            "method.critic_updates=1"]
    train = lambda steps, *o: train_run("msd", {"name": "digits"}, str(tmp_path / "msd"),  # noqa: E731
                                        overrides=[*over, f"train.steps={steps}", *o], extra_method={"teacher": teacher})
    run = train(1, "method.small_critics=false")
    cfg_file = latest_checkpoint(run) / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["method"]["small_critics"]  # as an older fewstep saved it
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(FewstepError, match="small_critics: False there, True now"):
        train(2)
    train(2, "method.small_critics=false")
    assert latest_checkpoint(run).name == "step_00000003"


def test_students_of_a_teacher_trained_with_dropout_have_none(tmp_path):
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm", extra=["method.dropout=0.2"]))
    for method, extra in (("dmd2", []), ("msd", ["method.students=2"]),
                          ("msd", ["method.students=2", "method.student_channels=[8,8]"])):
        nets = build_experiment(method, {"name": "digits"}, None, [f"method.teacher={teacher}", *extra]).method.build()
        rates = {n: {m.p for m in net.module.modules() if isinstance(m, nn.Dropout)} for n, net in nets.items()}
        assert rates.pop("teacher") == {0.2}  # frozen, run in eval mode
        assert rates and all(r == {0.0} for r in rates.values()), (method, rates)


def test_critic_dropout_is_on_in_the_critics_updates_and_off_where_the_dm_term_reads_it(tmp_path):
    tr = _trainer(tmp_path, "method.critic_dropout=0.3")
    drops = {n: [m for m in tr.raw[n].modules() if isinstance(m, nn.Dropout)] for n in ("generator", "critic")}
    assert {m.p for m in drops["critic"]} == {0.3} and {m.p for m in drops["generator"]} == {0.0}
    seen = []
    drops["critic"][0].register_forward_hook(lambda m, i, o: seen.append((m.training, torch.equal(i[0], o))))
    gen_phase, critic_phase = tr.phase_list
    tr._run_phase(gen_phase, 0, {})
    assert seen and all(not training and same for training, same in seen)  # read like the teacher: no dropout
    seen.clear()
    tr._run_phase(critic_phase, 0, {})
    assert seen and all(training and not same for training, same in seen)  # its denoising updates drop units
    with pytest.raises(ValueError, match="critic_dropout must be in"):
        DMD2Config(critic_dropout=1.0)


def test_a_run_resumes_with_its_teacher_spelled_as_another_path_to_the_same_folder(tmp_path, monkeypatch):
    from fewstep.checkpoint import latest_checkpoint
    from fewstep.cli.commands import distill_run

    from helpers import train_tiny_edm

    train_tiny_edm(tmp_path / "edm")
    other = train_tiny_edm(tmp_path / "edm2")
    monkeypatch.chdir(tmp_path)
    tiny = ["train.batch_size=4", "train.warmup_steps=0", "method.critic_updates=1", "method.gan=false"]
    run = distill_run("dmd2", "edm", "student", overrides=["train.steps=1", *tiny])
    distill_run("dmd2", str(tmp_path / "edm"), "student", overrides=["train.steps=2", *tiny])
    assert latest_checkpoint(run).name == "step_00000002"
    with pytest.raises(FewstepError, match=r"different method config \(teacher: \S*edm there, \S*edm2 now\)"):
        distill_run("dmd2", str(other), "student", overrides=["train.steps=3", *tiny])


def test_finetune_stage_starts_generators_and_critics_from_the_first_run(tmp_path):
    from safetensors.torch import load_file

    from fewstep.checkpoint import resolve_checkpoint
    from fewstep.cli.commands import train_run
    from fewstep.errors import FewstepError
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["train.steps=2", "train.batch_size=8", "train.log_every=1", "train.ema_decay=0.5",
            "method.critic_updates=1", "finetune.train.steps=1", "finetune.train.lr=2.5e-5"]
    small_msd = ["method.students=2", "method.student_channels=[8,8]", "method.tsm_steps=2"]
    for method, extra, names in (("dmd2", [], ("generator", "critic")),
                                 ("msd", small_msd, ("generator0", "critic0", "generator1", "critic1"))):
        final = train_run(method, {"name": "digits"}, str(tmp_path / method), overrides=over + extra,
                          extra_method={"teacher": teacher})
        first = resolve_checkpoint(final / "base")
        build = lambda *o: build_experiment(method, {"name": "digits"}, None,  # noqa: E731
                                            [f"method.teacher={teacher}", *extra, *o]).method.build()
        started, fresh = build(f"method.init_from={final / 'base'}"), build()
        for name in names:
            ema = first / f"{name}_ema.safetensors"
            want = load_file(str(ema if ema.is_file() else first / f"{name}.safetensors"))
            got = started[name].module.state_dict()
            assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), name
            assert not all(torch.equal(fresh[name].module.state_dict()[k], want[k]) for k in want), name
        logs = [json.loads(line) for line in (final / "stats.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logs] == [1] and not any(k.startswith("tsm") for k in logs[0])  # no second TSM
    with pytest.raises(FewstepError, match="holds a edm run; pass a dmd2 run"):
        build_experiment("dmd2", {"name": "digits"}, None,
                         [f"method.teacher={teacher}", f"method.init_from={teacher}"]).method.build()


def test_gen_sigma_is_the_one_step_generators_input_level_in_training_sampling_and_regression(tmp_path):
    seen = []

    def gen(x, sigma, labels):
        seen.append((float(x.std()), sigma.unique().tolist()))
        return torch.zeros_like(x)

    for over, level in (([], 80.0), (["method.gen_sigma=2.5"], 2.5)):
        seen.clear()
        m = _trainer(tmp_path / str(level), *over).method
        assert m.gen_sigmas == [level] and m.info()["gen_sigmas"] == [level]
        x, s, _ = m.generator_input(gen, torch.zeros(256, dtype=torch.long), None)
        assert s.unique().tolist() == [level] and abs(float(x.std()) / level - 1) < 0.05
        DMD2.generate({"generator": gen}, m.info(), torch.zeros(256, dtype=torch.long), list(range(256)))
        m._regression_error(gen, {"z": torch.randn(256, *m.shape), "x": torch.zeros(256, *m.shape),
                                  "labels": torch.zeros(256, dtype=torch.long)})
        for std, levels in seen:  # the sampler and the regression pairs feed G the same level as training
            assert levels == [level] and abs(std / level - 1) < 0.05
    with pytest.raises(ValueError, match="one-step generators"):
        DMD2Config(gen_sigma=2.5, gen_steps=4)
    with pytest.raises(ValueError, match=r"gen_sigma must be in \(0, 80\]"):
        DMD2Config(gen_sigma=0.0)


def test_init_from_a_run_at_another_gen_sigma_is_refused(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    first = train_run("dmd2", {"name": "digits"}, str(tmp_path / "first"), extra_method={"teacher": teacher},
                      overrides=["train.steps=1", "train.batch_size=8", "method.critic_updates=1", "method.gen_sigma=2.5"])
    build = lambda *o: build_experiment("dmd2", {"name": "digits"}, None,  # noqa: E731
                                        [f"method.teacher={teacher}", f"method.init_from={first}", *o]).method.build()
    with pytest.raises(FewstepError, match=r"trained with method.gen_sigma=2.5 and this run has null; pass "
                                           r"method.gen_sigma=2.5"):
        build()
    assert build("method.gen_sigma=2.5")["generator"].trainable


def test_nested_finetune_sections_run_as_a_chain_each_from_the_run_before(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.errors import FewstepError
    from fewstep.experiment import build_experiment

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    over = ["train.steps=1", "train.batch_size=8", "train.log_every=1", "method.critic_updates=1",
            "finetune.train.steps=1", "finetune.train.lr=2.5e-5",
            "finetune.finetune.train.steps=2", "finetune.finetune.method.gan_weight_gen=0.05"]
    final = train_run("dmd2", {"name": "digits"}, str(tmp_path / "chain"), overrides=over,
                      extra_method={"teacher": teacher})
    base, middle = final / "base", final / "stage2"
    cfg = {d.name: json.loads((d / "config.json").read_text()) for d in (base, middle, final)}
    assert cfg["base"]["finetune"]["finetune"]["train"]["steps"] == 2 and cfg["base"]["train"]["lr"] == 1e-4
    # each run starts from the one before it and keeps the changes of every section above its own
    assert cfg["stage2"]["method"]["init_from"] == str(base) and cfg["stage2"]["train"]["lr"] == 2.5e-5
    assert cfg["stage2"]["method"]["gan_weight_gen"] == cfg["base"]["method"]["gan_weight_gen"] != 0.05
    assert cfg["stage2"]["finetune"] == {"method": {"gan_weight_gen": 0.05}, "train": {"steps": 2}}
    assert cfg["chain"]["method"]["init_from"] == str(middle) and cfg["chain"]["train"]["lr"] == 2.5e-5
    assert cfg["chain"]["method"]["gan_weight_gen"] == 0.05 and "finetune" not in cfg["chain"]
    steps = [[json.loads(line)["step"] for line in (d / "stats.jsonl").read_text().splitlines()]
             for d in (base, middle, final)]
    assert steps == [[1], [1], [1, 2]]
    build = lambda *o, stage=0: build_experiment("dmd2", {"name": "digits"}, None,  # noqa: E731
                                                 [f"method.teacher={teacher}", *over, *o], stage=stage)
    assert build("finetune.finetune.train.steps=0", stage=1).finetune == {}  # the last run switched off
    with pytest.raises(FewstepError, match="no run 4"):
        build(stage=3)
    with pytest.raises(FewstepError, match="needs its own train.steps"):
        build_experiment("dmd2", {"name": "digits"}, None, [f"method.teacher={teacher}", "finetune.train.steps=1",
                                                            "finetune.finetune.method.gan_weight_gen=0.05"], stage=1)


def test_regression_pairs_are_the_teachers_ode_samples_of_their_noise_and_msd_shares_them(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.experiment import build_experiment
    from fewstep.samplers.noise import SeedStream

    from helpers import train_tiny_edm

    # a one-step teacher sampler maps sigma_max z to D(sigma_max z): exactly what the teacher-copy generator outputs
    teacher = str(train_tiny_edm(tmp_path / "edm", extra=["method.sample_steps=1"]))
    reg = ["method.regression_weight=1.0", "method.regression_pairs=40"]
    method = build_experiment("dmd2", {"name": "digits"}, None, [f"method.teacher={teacher}", *reg]).method
    method.build()
    pairs = method.training_data()["pairs"]
    assert torch.equal(torch.bincount(pairs["labels"]), torch.full((10,), 4))
    assert all(torch.equal(pairs["z"][j], SeedStream([10**9 + j]).randn(1, 8, 8)[0]) for j in (0, 17, 39))
    assert pairs["x"].abs().max() > 1e-3
    heldout = method._heldout["z"]
    assert len(heldout) == 256 and torch.equal(heldout[5], SeedStream([2 * 10**9 + 5]).randn(1, 8, 8)[0])
    run = train_run("dmd2", {"name": "digits"}, str(tmp_path / "d"), extra_method={"teacher": teacher}, overrides=[
        *reg, "train.steps=2", "train.batch_size=8", "train.log_every=1", "method.critic_updates=1"])
    logs = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    for key in ("generator/reg", "generator/reg_heldout"):  # exact until the first update moves G
        assert logs[0][key] < 1e-3 * logs[1][key]
    msd = build_experiment("msd", {"name": "digits"}, None, [f"method.teacher={teacher}", "method.students=2", *reg]).method
    msd.build()
    streams = msd.training_data()
    assert set(streams["pairs"]["labels"].tolist()) == set(range(10))  # not split by partition
    assert set(streams["part0"]["labels"].tolist()) == set(range(5))
    # method.regression_steps: the pairs come from the teacher's sampler at that many steps instead of its own
    from fewstep.runs import load_run

    two = build_experiment("dmd2", {"name": "digits"}, None,
                           [f"method.teacher={teacher}", *reg, "method.regression_steps=2"]).method
    two.build()
    x2 = two.training_data()["pairs"]["x"]
    t = load_run(teacher)
    direct = edm_sample(t.nets["model"], pairs["labels"][:5], [10**9 + j for j in range(5)], (1, 8, 8), steps=2,
                        solver=t.info["sampler"]["solver"], cfg_scale=1.0, null_class=t.info["null_class"])
    # batch 40 against 5 changes the float summation order; the untrained tiny teacher's outputs reach ~100
    assert torch.allclose(x2[:5], direct, rtol=1e-4, atol=1e-4) and not torch.allclose(x2, pairs["x"], atol=1e-3)
    # regression_noise_scale: the targets start from 1.2 sigma_max z (the student's input stays z);
    # regression_sigma_scale: the teacher's sampler is told sigma / 1.5 at every step
    for option, sampler_kw, k in (("regression_noise_scale", "noise_scale", 1.2),
                                  ("regression_sigma_scale", "sigma_scale", 1.5)):
        other = build_experiment("dmd2", {"name": "digits"}, None,
                                 [f"method.teacher={teacher}", *reg, f"method.{option}={k}"]).method
        other.build()
        other_pairs = other.training_data()["pairs"]
        direct = edm_sample(t.nets["model"], pairs["labels"][:5], [10**9 + j for j in range(5)], (1, 8, 8), steps=1,
                            solver=t.info["sampler"]["solver"], cfg_scale=1.0, null_class=t.info["null_class"],
                            **{sampler_kw: k})
        assert torch.equal(other_pairs["z"], pairs["z"])
        assert torch.allclose(other_pairs["x"][:5], direct, rtol=1e-4, atol=1e-4), option
        assert not torch.allclose(other_pairs["x"], pairs["x"], atol=1e-3), option
    with pytest.raises(ValueError, match="regression_sigma_scale must be > 0"):
        DMD2Config(regression_sigma_scale=0.0)
    with pytest.raises(ValueError, match="regression_pairs >= 1"):
        DMD2Config(regression_weight=1.0, regression_pairs=0)


def test_a_few_step_generators_regression_pairs_supervise_its_first_step_from_pure_noise(tmp_path):
    tr = _trainer(tmp_path, "method.gen_steps=3", "method.step_sigmas=[80,2.5,0.5]", "method.regression_weight=1.0",
                  "method.regression_pairs=16")
    m, seen = tr.method, []

    def gen(x, sigma, labels):
        seen.append(sigma.unique().tolist())
        return torch.full_like(x, 0.5)

    pairs = {"z": torch.randn(16, *m.shape), "x": torch.zeros(16, *m.shape), "labels": torch.zeros(16, dtype=torch.long)}
    assert float(m._regression_error(gen, pairs)) == pytest.approx(0.25) and seen == [[80.0]]
    logs = {}
    tr._run_phase(tr.phase_list[0], 0, logs)
    assert logs["generator/reg"] > 0


def test_dm_below_input_refuses_a_dm_floor_above_the_last_steps_input_level(tmp_path):
    with pytest.raises(FewstepError, match=r"dm_min=0.3 puts the lowest DM level \(sigma 0.319\) above the last "
                                           r"generator step's input level \(sigma 0.168\)"):
        _trainer(tmp_path, "method.gen_steps=4", "method.dm_below_input=true", "method.dm_min=0.3")
    assert _trainer(tmp_path / "ok", "method.gen_steps=3", "method.step_sigmas=[80,17.5,2.5]",
                    "method.dm_below_input=true", "method.dm_min=0.3").method.gen_sigmas[-1] == 2.5


def test_gan_real_teacher_shows_the_discriminator_the_teachers_samples_per_student(tmp_path):
    from fewstep.experiment import build_experiment
    from fewstep.runs import load_run

    from helpers import train_tiny_edm

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    opts = [f"method.teacher={teacher}", "method.gan_real=teacher", "method.gan_real_samples=30",
            "method.gan_real_steps=2", "method.critic_updates=1"]
    method = build_experiment("dmd2", {"name": "digits"}, None, opts).method
    nets = method.build()
    streams = method.training_data()
    fake_real = streams["teacher_default"]
    assert sorted(streams) == ["default", "teacher_default"]
    assert torch.equal(torch.bincount(fake_real["labels"]), torch.full((10,), 3))
    t = load_run(teacher)
    direct = edm_sample(t.nets["model"], fake_real["labels"][:4], [3 * 10**9 + j for j in range(4)], (1, 8, 8),
                        steps=2, solver=t.info["sampler"]["solver"], cfg_scale=1.0, null_class=t.info["null_class"])
    assert torch.allclose(fake_real["x"][:4], direct, atol=1e-6)

    class Recorder(nn.Module):  # the critic, keeping what its GAN head is shown
        def __init__(self, critic):
            super().__init__()
            self.critic, self.seen = critic, {}

        def forward(self, *a, **kw):
            self.seen = kw
            return self.critic(*a, **kw)

    modules = {k: v.module for k, v in nets.items()}
    modules["critic"] = Recorder(modules["critic"])
    method.cfg.gan_augment = 0.0
    method._gan_input = lambda x: (x, torch.full((len(x),), 1.0))  # clean, so the inputs can be compared
    data = streams["default"]
    batches = {"default": {"x": data["x"][:4], "labels": data["labels"][:4]},
               "teacher_default": {"x": fake_real["x"][5:9], "labels": fake_real["labels"][5:9]}}
    ctx = StepContext(0, Phase("probe", None, trains=()), 4, torch.device("cpu"), modules, modules, batches.get)
    method.critic_step(ctx, "critic", "generator")
    seen = modules["critic"].seen
    assert torch.equal(seen["gan_x"][4:], fake_real["x"][5:9])
    assert torch.equal(seen["gan_labels"], torch.cat([data["labels"][:4], fake_real["labels"][5:9]]))
    msd = build_experiment("msd", {"name": "digits"}, None, [*opts, "method.students=2"]).method
    msd.build()
    parts = msd.training_data()
    assert set(parts["teacher_part1"]["labels"].tolist()) == set(range(5, 10)) == set(parts["part1"]["labels"].tolist())
    assert len(parts["teacher_part0"]["x"]) == 15
    with pytest.raises(ValueError, match="gan_real must be"):
        DMD2Config(gan_real="real")
    with pytest.raises(ValueError, match="set gan=true"):
        DMD2Config(gan_real="teacher", gan=False)


def test_random_translate_shifts_whole_images_by_at_most_one_pixel_and_passes_gradients():
    from fewstep.methods.common.adversarial import random_translate

    torch.manual_seed(0)
    x = torch.randn(400, 1, 6, 6, requires_grad=True)
    out = random_translate(x, p=0.5)
    padded = torch.nn.functional.pad(x.detach(), (1, 1, 1, 1), mode="replicate")
    shifts = []
    for i in range(len(x)):
        match = [(dy, dx) for dy in range(3) for dx in range(3)
                 if torch.equal(out[i].detach(), padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert len(match) == 1  # each image is one whole shifted copy of itself
        shifts.append(match[0])
    kept = sum(s == (1, 1) for s in shifts) / len(shifts)
    assert abs(kept - (0.5 + 0.5 / 9)) < 0.07  # unshifted: 1 - p, plus p times the zero offset
    assert len(set(shifts)) == 9
    out.sum().backward()  # every output pixel is one input pixel
    assert x.grad.sum().item() == pytest.approx(x[0].numel() * len(x))
    assert random_translate(x, p=0.0) is x


def test_gan_inputs_respect_the_level_range_and_an_always_on_augmentation_is_refused():
    m = _bare_dmd2(gan_min=0.5)
    x = torch.zeros(2000, 1, 4, 4)
    x_gan, sigma = m._gan_input(x)
    assert sigma.min() >= m.levels[500] and sigma.max() <= m.levels[-1]
    capped = _bare_dmd2(gan_max=0.3)._gan_input(x)[1]
    assert capped.max() <= m.levels[299] and capped.min() <= m.levels[10]
    assert abs((x_gan / sigma[:, None, None, None]).std().item() - 1.0) < 0.02  # each noised to its own level
    assert (_bare_dmd2()._gan_input(x)[1] < m.levels[500]).float().mean() > 0.4  # default: the whole grid
    with pytest.raises(ValueError, match="leak"):
        DMD2Config(gan_augment=1.0)
    with pytest.raises(ValueError, match="gan_min < gan_max"):
        DMD2Config(gan_min=0.5, gan_max=0.5)


def _dry_run_records(capsys) -> list[dict]:
    """The config records `--dry-run` printed, one per run of the chain."""
    out, records, at = capsys.readouterr().out, [], 0
    while (at := out.find("{", at)) >= 0:
        record, at = json.JSONDecoder().raw_decode(out, at)
        records.append(record)
    return records


def test_shipped_digits_config_resolves_to_the_two_stages_it_was_measured_as(capsys):
    """configs/dmd2_digits_best.yaml is the chain BENCHMARKS.md measured: the first stage over 5,000 pairs with the
    teacher told sigma/1.1 at all DM levels, the second started from it over 1,000 pairs at 1.2, DM levels from 30%
    up, EMA 0.999."""
    from pathlib import Path

    from fewstep.bench.common import SHIPPED_TEACHERS
    from fewstep.cli.main import main

    config = Path(__file__).resolve().parents[1] / "configs" / "dmd2_digits_best.yaml"
    assert main(["distill", "dmd2", "--teacher", str(SHIPPED_TEACHERS / "edm_digits"), "--config", str(config),
                 "--out", "runs/best", "--dry-run"]) == 0
    first, second = _dry_run_records(capsys)
    common = {"regression_weight": 1.0, "regression_steps": 14, "gan_augment": 0.5, "divergence": "js",
              "gan_weight_gen": 3e-2}
    for stage, own in ((first, {"teacher_sigma_scale": 1.1, "regression_pairs": 5000, "dm_min": 0.02, "init_from": None}),
                       (second, {"teacher_sigma_scale": 1.2, "regression_pairs": 1000, "dm_min": 0.3,
                                 "init_from": "runs/best/base"})):
        assert {k: stage["method"][k] for k in {**common, **own}} == {**common, **own}
        assert stage["train"]["batch_size"] == 128 and stage["train"]["lr"] == 1e-4
    assert (first["train"]["steps"], first["train"]["ema_decay"], first["train"]["ema_warmup"]) == (3000, 0.99, True)
    assert (second["train"]["steps"], second["train"]["ema_decay"], second["train"]["ema_warmup"]) == (500, 0.999, False)


def test_shipped_fashion_config_resolves_to_the_four_runs_it_was_measured_as(capsys):
    """configs/dmd2_fashion_best.yaml is the chain BENCHMARKS.md measured (runs fm_A, fm_E2, fm_E3, fm_G3): the
    preset, then a longer EMA, a quarter of the LR, and GAN weights 0.1, each from the run before."""
    from pathlib import Path

    from fewstep.bench.common import SHIPPED_TEACHERS
    from fewstep.cli.main import main

    config = Path(__file__).resolve().parents[1] / "configs" / "dmd2_fashion_best.yaml"
    assert main(["distill", "dmd2", "--teacher", str(SHIPPED_TEACHERS / "edm_fashion_mnist"), "--config", str(config),
                 "--out", "runs/fm", "--dry-run"]) == 0
    runs = _dry_run_records(capsys)
    got = [(r["method"]["init_from"], r["train"]["steps"], r["train"]["ema_decay"], r["train"]["ema_warmup"],
            r["train"]["lr"], r["method"]["gan_weight_gen"], r["method"]["gan_weight_critic"]) for r in runs]
    assert got == [(None, 2000, 0.99, True, 1e-4, 3e-3, 1e-2),
                   ("runs/fm/base", 1375, 0.999, False, 1e-4, 3e-3, 1e-2),
                   ("runs/fm/stage2", 500, 0.999, False, 2.5e-5, 3e-3, 1e-2),
                   ("runs/fm/stage3", 375, 0.999, False, 2.5e-5, 0.1, 0.1)]
    assert all(r["train"]["batch_size"] == 64 and r["train"]["precision"] == "bf16" for r in runs)
    assert all(r["method"]["dm_min"] == 0.02 and r["method"]["regression_weight"] == 0.0 for r in runs)

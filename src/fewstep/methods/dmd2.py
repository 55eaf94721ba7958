"""DMD2 (Yin et al., NeurIPS 2024): distribution matching + two time-scale updates + GAN, one or few steps.

Networks: teacher (frozen EDM denoiser = real score), generator (teacher copy, run at sigma_max; EMA),
critic = fake-score denoiser (teacher copy) with a GAN head on its bottleneck (§4.2).
Generator phase (once per trainer step):
  x = G(input)                          one step: input = sigma_max z (or SiD's 2.5 z); N steps: backward simulation (§4.3),
                                        optionally a critic per step (step_critic) and DM levels below each step's input
  DM  (DMD Eq. 7-8): t ~ U[2%, 98%] of a 1000-level Karras grid, x_t = x + sigma_t eps,
      g = ((x - D_real(x_t)) - (x - D_fake(x_t))) / mean|x - D_real(x_t)|,  L_DM = 1/2 mean ||x - sg(x - g)||^2
      optional f-divergence (f-distill, Xu et al. 2025, Thm. 1): g_i *= h(r_i) / mean h, h(r) = r^2 f''(r), with
      r = p_real / p_fake at x_t read off the GAN head, clipped and normalised per noise-level bin (reverse KL:
      h = 1, the default, is DMD2)
  GAN: L_G = softplus(-head(critic(x + sigma eps))) over all levels (non-saturating, diffusion GAN); optional
       range of those levels and translation of the clean inputs, both against a small real set; the "real" side
       is the dataset (DMD2) or the teacher's own samples (LADD, Sauer et al. 2024, trains on teacher-generated data)
  REG (DMD §3.3, optional; DMD2 drops it): L_reg = mean ||G(sigma_max z) - y||^2 on teacher ODE pairs (z, y)
  ANCHOR (fewstep, optional, N > 1): L = mean ||G(x_k; sigma_k) - ODE_teacher(x_k, sigma_k -> 0)||^2 for steps k > 0
Critic phase (`critic_updates` times, the two-time-scale rule): denoising loss on detached G samples,
  lambda(sigma) ||D_fake(x_sigma) - x||^2, + L_D = softplus(head(fake)) + softplus(-head(real)).
The DM loss and the surrogate are shared with DiMO (methods/common/distribution_matching.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepContext, StepOut
from fewstep.methods.common.adversarial import (CriticWithHead, discriminator_gan_loss, generator_gan_loss,
                                                 random_translate)
from fewstep.methods.common.distribution_matching import check_divergence, density_ratio_weights, surrogate_loss
from fewstep.methods.common.start import load_start_weights, start_run_config
from fewstep.methods.edm import continuous_info, continuous_training_data, require_edm_teacher
from fewstep.processes.gaussian import SIGMA_MAX, expand, karras_sigmas, loss_weight
from fewstep.runlog import progress
from fewstep.samplers import check_cfg_scale
from fewstep.samplers.gaussian import check_cfg_interval, edm_sample, edm_solve_from, fewstep_sample, guided_denoise
from fewstep.samplers.noise import SeedStream

HELDOUT_PAIRS = 256  # teacher pairs the regression never trains on


@dataclass
class DMD2Config:
    teacher: str = ""  # run folder of an EDM teacher (fewstep train teacher --kind edm)
    teacher_cfg: float = 1.0  # guidance of the real score in the DM term (ImageNet recipe: none)
    # [lo, hi]: teacher_cfg only where lo < sigma <= hi, the level the teacher is told (Kynkäänniemi et al. 2024:
    # guidance at high noise costs diversity, at low noise it does little); null = every level
    teacher_cfg_interval: tuple[float, float] | None = None
    # the real score read at sigma / teacher_sigma_scale: k > 1 makes the teacher remove less noise, the
    # under-dispersion EDM §4 counters with S_noise > 1 (a Gaussian's target spread widens by k); 1 = DMD
    teacher_sigma_scale: float = 1.0
    num_levels: int = 1000  # the Karras grid DM and critic noise levels are drawn from
    dm_min: float = 0.02  # DM levels: [2%, 98%] of the grid (DMD §5, DreamFusion)
    dm_max: float = 0.98
    # f-distill (Xu et al. 2025): minimise D_f(teacher || student) instead of DMD's reverse KL; each sample's DM
    # gradient is weighted by h(r) = r^2 f''(r), r = p_teacher / p_student at x_t from the GAN head's logit (needs gan)
    divergence: str = "rkl"  # rkl = DMD2 | fkl | jeffrey | js | hellinger | pearson | neyman | alpha
    beta: float = 0.0  # Jeffrey: (1 - beta) FKL + beta RKL
    alpha: float = 0.5  # alpha-divergence only
    ratio_range: tuple[float, float] = (0.1, 20.0)  # r is clipped to it (FastGen's defaults)
    ratio_bins: int = 10  # r divided by its batch mean within each of this many bins of DM levels (0 = off)
    critic_updates: int = 5  # critic steps per generator step (dfake_gen_update_ratio)
    gan: bool = True
    gan_weight_gen: float = 3e-3  # lambda_G (ImageNet)
    gan_weight_critic: float = 1e-2  # lambda_D
    # where the discriminator reads the critic: "bottleneck" (DMD2 §4.2) or "multiscale": a head on the bottleneck and
    # one on each decoder level's output, logits averaged (multi-level feature heads as in LADD, Sauer et al. 2024)
    gan_head: str = "bottleneck"
    # GAN inputs against a small real set (1,437 digits): its noise levels from [gan_min, gan_max) of the grid (0, 1
    # = all, as the official code), and a random translation with probability gan_augment applied to real and fake alike
    gan_min: float = 0.0
    gan_max: float = 1.0
    gan_augment: float = 0.0
    # what the discriminator calls real: "data" (DMD2) or "teacher": gan_real_samples samples of the teacher's sampler
    # at gan_real_steps (None: its own), class-balanced: unlimited real images, and the teacher's distribution as
    # its chosen sampler draws it rather than as its score defines it
    gan_real: str = "data"
    gan_real_samples: int = 20000
    gan_real_steps: int | None = None
    gen_steps: int = 1  # 1: one-step generator; N > 1: N-step generator
    # the one-step generator's input level, G(gen_sigma z) told gen_sigma: None = sigma_max (DMD2); SiD (Zhou et al.
    # 2024) runs its EDM generators at 2.5 (official code, sigma_G), where the teacher copy denoises rather than
    # predicts a mean image
    gen_sigma: float | None = None
    # N > 1: the steps' input levels, descending (FastGen's t_list); None: DMD2's every (T/N)-th level of the grid
    # from the top (80, 17.5, 2.5, 0.168 for N = 4)
    step_sigmas: tuple[float, ...] | None = None
    backward_simulation: bool = True  # N > 1: train on the generator's own rollouts, not noised real data
    # N > 1: the critic (fake score and GAN head) is told which generator step made each sample, through a class
    # embedding per (step, class), so the DM gradient of step k's outputs is taken against their own fake score;
    # false: one fake score for the mixture of all steps' outputs (DMD2's code)
    step_critic: bool = False
    # N > 1: the DM levels of step k's outputs stop at that step's input level sigma_k, above which its outputs carry
    # what earlier steps made; false: every step's outputs at all DM levels (DMD2)
    dm_below_input: bool = False
    # N > 1: steps after the first also regress (l2, this weight) on the teacher's Heun ODE from their own input,
    # anchor_steps levels from sigma_k to 0, computed online without grad: DMD's regression (§3.3) carried to the
    # backward-simulated inputs, which hold a step to what the teacher makes of them; 0 = off (DMD2)
    anchor_weight: float = 0.0
    anchor_steps: int = 8
    critic_lr: float | None = None  # None: train.lr
    # dropout in the fake score's own denoising updates (off when the DM term reads it, as the teacher is read): a
    # teacher trained with dropout estimates a smoothed score, which a critic without it does not; 0 = DMD2's code
    critic_dropout: float = 0.0
    # DMD's regression loss (DMD §3.3, lambda_reg 0.25 with LPIPS there; l2 here: no LPIPS weights offline): 0 = off,
    # the DMD2 recipe. Pairs = the teacher's own deterministic sampler run from fixed noise, all classes; with
    # gen_steps > 1 they supervise the first step, the generator's map from pure noise (a fewstep extension)
    regression_weight: float = 0.0
    regression_pairs: int = 5000  # few (memorised) anchor the spread; 50,000 fit the map and score worse (digits)
    regression_steps: int | None = None  # the pairs' sampler steps; None: the teacher run's own (its solver either way)
    # the pairs' targets start from noise_scale x the student's input noise: G(sigma_max z) regresses on ODE(s sigma_max z)
    regression_noise_scale: float = 1.0
    # ... and from the teacher's sampler told sigma / k (the sampler's --sigma-scale; 1 = the teacher as trained),
    # so the pairs can come from the wider distribution teacher_sigma_scale aims the DM term at
    regression_sigma_scale: float = 1.0
    # a DMD2 run of the same teacher to start the generator (its EMA weights) and critic (with its GAN head) from,
    # with a fresh optimizer: the official ImageNet recipe's second stage resumes its best checkpoint at 1/4 the LR
    init_from: str | None = None

    def __post_init__(self):
        if self.gen_steps < 1 or self.critic_updates < 1:
            raise ValueError("gen_steps and critic_updates must be >= 1")
        for name in ("step_critic", "dm_below_input"):
            if getattr(self, name) and self.gen_steps == 1:
                raise ValueError(f"{name} treats each generator step's samples apart; it needs gen_steps > 1")
        if self.step_sigmas is not None:
            s = [float(v) for v in self.step_sigmas]
            if len(s) != self.gen_steps or self.gen_steps == 1 or not (
                    SIGMA_MAX >= s[0] and s[-1] > 0 and all(a > b for a, b in zip(s, s[1:]))):
                raise ValueError(f"step_sigmas must list gen_steps (> 1) input levels, descending in (0, {SIGMA_MAX:g}] "
                                 f"(got {s} for gen_steps={self.gen_steps})")
        if self.gen_sigma is not None and not (0 < self.gen_sigma <= SIGMA_MAX and self.gen_steps == 1):
            raise ValueError(f"gen_sigma must be in (0, {SIGMA_MAX:g}] and is for one-step generators (gen_steps=1); "
                             "null: sigma_max")
        if self.anchor_weight < 0 or self.anchor_steps < 1 or (self.anchor_weight and self.gen_steps == 1):
            raise ValueError("anchor_weight must be >= 0 and anchor_steps >= 1; the anchor is for the steps after the "
                             "first (gen_steps > 1; one step has regression_weight)")
        if not 0.0 <= self.critic_dropout < 1.0:
            raise ValueError("critic_dropout must be in [0, 1) (0: no dropout, the official code)")
        if self.critic_lr is not None and not self.critic_lr > 0:
            raise ValueError("critic_lr must be > 0 (or null: train.lr)")
        if not 0.0 <= self.dm_min < self.dm_max <= 1.0:
            raise ValueError("need 0 <= dm_min < dm_max <= 1")
        if not 0.0 <= self.gan_min < self.gan_max <= 1.0 or not 0.0 <= self.gan_augment < 1.0:
            raise ValueError("need 0 <= gan_min < gan_max <= 1 and 0 <= gan_augment < 1 (p = 1 would leak the augmentation)")
        check_divergence(self.divergence, self.alpha)
        check_cfg_scale(self.teacher_cfg, "teacher_cfg")
        self.teacher_cfg_interval = check_cfg_interval(self.teacher_cfg_interval, "teacher_cfg_interval")
        if self.divergence != "rkl" and not self.gan:
            raise ValueError(f"divergence {self.divergence} weighs the DM gradient by the GAN head's density ratio; "
                             "set gan=true (or divergence=rkl)")
        if not 0.0 < self.ratio_range[0] < 1.0 < self.ratio_range[1] or self.ratio_bins < 0:
            raise ValueError("need 0 < ratio_range[0] < 1 < ratio_range[1] and ratio_bins >= 0")
        for name in ("regression_steps", "gan_real_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or null: the teacher's own steps)")
        if self.gan_head not in ("bottleneck", "multiscale"):
            raise ValueError(f"gan_head must be 'bottleneck' or 'multiscale' (got {self.gan_head!r})")
        if self.gan_real not in ("data", "teacher") or self.gan_real_samples < 1:
            raise ValueError(f"gan_real must be 'data' or 'teacher' (got {self.gan_real!r}) and gan_real_samples >= 1")
        if self.gan_real == "teacher" and not self.gan:
            raise ValueError("gan_real=teacher feeds the GAN term; set gan=true (or gan_real=data)")
        if not self.teacher_sigma_scale > 0:
            raise ValueError("teacher_sigma_scale must be > 0 (1: the teacher is told the true noise level)")
        if not self.regression_noise_scale > 0:
            raise ValueError("regression_noise_scale must be > 0 (1: the pairs start from the student's own noise)")
        if not self.regression_sigma_scale > 0:
            raise ValueError("regression_sigma_scale must be > 0 (1: the pairs come from the teacher as trained)")
        if self.regression_weight and self.regression_pairs < 1:
            raise ValueError("the regression loss needs regression_pairs >= 1")


class DMD2(Method):
    name = "dmd2"
    Config = DMD2Config
    sampler_options = ("noise_scale",)

    # ------------------------------------------------------------------ setup
    def _teacher(self):
        if not hasattr(self, "_teacher_run"):
            if not self.cfg.teacher:
                raise FewstepError(f"{self.name} needs a teacher: pass --teacher <EDM run folder>")
            self._teacher_run = require_edm_teacher(self.cfg.teacher)
        return self._teacher_run

    def _setup_grid(self) -> None:
        run = self._teacher()
        self.t_info = run.info
        self.shape = tuple(run.info["shape"])
        self.sigma_data = run.nets["model"].cfg.sigma_data
        self.levels = karras_sigmas(self.cfg.num_levels).flip(0).float()  # ascending
        n = self.cfg.gen_steps
        T = self.cfg.num_levels
        self.gen_sigmas = ([self.cfg.gen_sigma or SIGMA_MAX] if n == 1 else
                           [float(v) for v in self.cfg.step_sigmas] if self.cfg.step_sigmas else
                           [float(self.levels[T - 1 - k * T // n]) for k in range(n)])
        floor = float(self.levels[int(self.cfg.dm_min * T)])
        if self.cfg.dm_below_input and floor > self.gen_sigmas[-1]:
            raise FewstepError(f"method.dm_min={self.cfg.dm_min:g} puts the lowest DM level (sigma {floor:.3g}) above the "
                               f"last generator step's input level (sigma {self.gen_sigmas[-1]:.3g}), so "
                               "dm_below_input leaves that step no levels: lower dm_min or raise method.step_sigmas")

    @staticmethod
    def _copy(teacher):
        """A trainable teacher copy without dropout, as the official code builds every network (a teacher trained
        with dropout would otherwise make training samples differ from sampling ones)."""
        return copy.deepcopy(teacher).set_dropout(0.0)

    def _critic(self, teacher) -> CriticWithHead:
        """The fake-score denoiser starts as a teacher copy; its GAN head works on images or on 2-D features."""
        fake = self._copy(teacher).set_dropout(self.cfg.critic_dropout)
        if self.cfg.step_critic:
            fake.tile_classes(self.cfg.gen_steps)
        return CriticWithHead(fake, self.t_info["kind"] == "continuous", gan=self.cfg.gan,
                              multiscale=self.cfg.gan_head == "multiscale")

    def build(self) -> dict[str, Net]:
        self._setup_grid()
        teacher = self._teacher().nets["model"]
        return self._start_from_run({
            "teacher": Net(teacher), "generator": Net(self._copy(teacher), trainable=True, ema=True),
            "critic": Net(self._critic(teacher), trainable=True, lr=self.cfg.critic_lr)})

    def _start_from_run(self, nets: dict[str, Net]) -> dict[str, Net]:
        """With method.init_from, the trainable networks take that run's weights (not on resume: the checkpoint has)."""
        if self.cfg.init_from and not self.resuming:
            theirs = start_run_config(self.cfg.init_from).get("gen_sigma")
            if theirs != self.cfg.gen_sigma:  # a generator trained at another input level starts from a wrong map
                want, have = ("null" if v is None else v for v in (theirs, self.cfg.gen_sigma))  # null = sigma_max
                raise FewstepError(f"method.init_from: '{self.cfg.init_from}' was trained with method.gen_sigma={want}"
                                   f" and this run has {have}; pass method.gen_sigma={want}")
            load_start_weights(self.cfg.init_from, self.name, {n: v.module for n, v in nets.items() if v.trainable})
        return nets

    def training_data(self) -> dict[str, dict[str, torch.Tensor]]:
        data = continuous_training_data(load_dataset(self.data_cfg.name, self.data_cfg.data_dir))
        streams = {"default": data, **self.teacher_streams({"default": None})}
        if self.cfg.regression_weight:
            streams["pairs"] = self.regression_pairs()
        return streams

    def teacher_streams(self, parts: dict[str, list[int] | None]) -> dict[str, dict[str, torch.Tensor]]:
        """With gan_real=teacher, the discriminator's real images of each data stream: the teacher's samples of
        that stream's classes (None: all), named teacher_<stream> (after every other stream name, so the streams
        drawn before keep their shuffling seeds)."""
        if self.cfg.gan_real != "teacher":
            return {}
        s = self._teacher_pairs(3 * 10**9, self.cfg.gan_real_samples, self.cfg.gan_real_steps, "GAN real images")
        s = {"x": s["x"], "labels": s["labels"]}
        return {f"teacher_{name}": s if classes is None else
                {k: v[torch.isin(s["labels"], torch.tensor(classes))] for k, v in s.items()}
                for name, classes in parts.items()}

    def regression_pairs(self) -> dict[str, torch.Tensor]:
        """DMD's paired set: noise z -> the teacher's ODE sample y from sigma_max z, class-balanced over all classes
        (MSD shares it across students: filtering it by partition drops modes, MSD Fig. 8). Seeds from 10^9 on
        keep it apart from evaluation noise; the same pairs come back on resume. Also draws the held-out pairs
        (seeds from 2 x 10^9) the logged `reg_heldout` is measured on."""
        c = self.cfg
        scales = {"noise_scale": c.regression_noise_scale, "sigma_scale": c.regression_sigma_scale}
        self._heldout = self._teacher_pairs(2 * 10**9, HELDOUT_PAIRS, c.regression_steps, "held-out regression pairs",
                                            **scales)
        return self._teacher_pairs(10**9, c.regression_pairs, c.regression_steps, "regression pairs", **scales)

    def _teacher_pairs(self, first_seed: int, n: int, steps: int | None, what: str,
                       noise_scale: float = 1.0, sigma_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """n class-balanced teacher ODE samples from seeds first_seed... at `steps` (None: the teacher run's own),
        started from noise_scale x their noise z (z as drawn, unscaled, is returned beside them), the teacher told
        sigma / sigma_scale."""
        from fewstep.metrics.evaluate import balanced_labels

        run = self._teacher()
        teacher, sampler = run.nets["model"], run.info.get("sampler", {})
        steps, solver = steps or sampler.get("steps", 18), sampler.get("solver", "heun")
        device = next(teacher.parameters()).device  # wherever the trainer put it
        labels, seeds = balanced_labels(run.info["num_classes"], n), list(range(first_seed, first_seed + n))
        out = []
        with progress(n, desc=f"{what} ({solver}, {steps} steps)") as bar:
            for i in range(0, n, 500):
                out.append(edm_sample(teacher, labels[i:i + 500].to(device), seeds[i:i + 500], self.shape,
                                      steps=steps, solver=solver, cfg_scale=self.cfg.teacher_cfg,
                                      cfg_interval=self.cfg.teacher_cfg_interval,
                                      null_class=run.info["null_class"], noise_scale=noise_scale,
                                      sigma_scale=sigma_scale).cpu())
                bar.update(len(out[-1]))
        return {"z": SeedStream(seeds).randn(*self.shape), "x": torch.cat(out), "labels": labels}

    def _regression_error(self, gen, pairs: dict[str, torch.Tensor]) -> torch.Tensor:
        z = pairs["z"] * self.gen_sigmas[0]
        pred = gen(z, torch.full((len(z),), self.gen_sigmas[0], device=z.device), pairs["labels"])
        return ((pred - pairs["x"]) ** 2).mean()

    def phases(self) -> list[Phase]:
        return [Phase("generator", lambda ctx: self.generator_step(ctx, "generator", "critic"), trains=("generator",)),
                Phase("critic", lambda ctx: self.critic_step(ctx, "critic", "generator"), trains=("critic",),
                      repeat=self.cfg.critic_updates)]

    # ------------------------------------------------------------------ pieces
    def _level(self, b: int, lo: float, hi: float, device) -> torch.Tensor:
        """sigma drawn uniformly over grid indices [lo T, hi T)."""
        T = self.cfg.num_levels
        i = torch.randint(int(lo * T), max(int(lo * T) + 1, int(hi * T)), (b,), device=device)
        return self.levels.to(device)[i]

    def _input_level(self, step: int) -> int:
        """How many grid levels lie at or below generator step `step`'s input level."""
        return int(torch.searchsorted(self.levels, torch.tensor(self.gen_sigmas[step], dtype=self.levels.dtype),
                                      right=True))

    def _dm_bin(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """Which of `ratio_bins` equal-width bins of the DM's grid indices each sigma falls in (None: no binning)."""
        n = self.cfg.ratio_bins
        if not n:
            return None
        lo, hi = int(self.cfg.dm_min * self.cfg.num_levels), int(self.cfg.dm_max * self.cfg.num_levels)
        edges = self.levels.to(sigma.device)[[lo + k * (hi - lo) // n for k in range(1, n)]]
        return torch.bucketize(sigma, edges, right=True)

    def critic_labels(self, labels: torch.Tensor, step: int) -> torch.Tensor:
        """The critic's labels for samples of generator step `step`: with step_critic, that step's copy of the classes."""
        return labels + step * (self.t_info["num_classes"] + 1) if self.cfg.step_critic else labels

    def generator_input(self, gen, labels: torch.Tensor, real: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(x_k, sigma_k, k) the generator is trained on this step (§4.3 backward simulation for N > 1 steps)."""
        b, device = labels.shape[0], labels.device
        sig = self.gen_sigmas
        x = torch.randn(b, *self.shape, device=device) * sig[0]
        k = int(torch.randint(0, len(sig), ()))  # one step index per iteration, shared by the batch
        if k == 0:
            return x, torch.full((b,), sig[0], device=device), 0
        if self.cfg.backward_simulation:
            with torch.no_grad():  # the generator's own inference-time rollout, no gradient through it
                for j in range(k):
                    x0 = gen(x, torch.full((b,), sig[j], device=device), labels)
                    x = x0 + sig[j + 1] * torch.randn_like(x0)
        else:
            x = real + sig[k] * torch.randn_like(real)
        return x, torch.full((b,), sig[k], device=device), k

    def _gan_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the discriminator sees of clean images x: augmented, then noised to a level of its own (diffusion GAN)."""
        sigma = self._level(x.shape[0], self.cfg.gan_min, self.cfg.gan_max, x.device)
        x = random_translate(x, self.cfg.gan_augment)
        return x + expand(sigma, x) * torch.randn_like(x), sigma

    def dm_grad(self, ctx: StepContext, critic_name: str, x: torch.Tensor, y: torch.Tensor,
                logs: dict | None = None, step: int = 0) -> torch.Tensor:
        """DMD's distribution-matching gradient at x (Eq. 7-8), no grad: (p_real - p_fake) / mean|p_real|, times
        f-distill's per-sample weight h(r) for divergences other than reverse KL (its largest goes to `logs`);
        x came from generator step `step`."""
        c = self.cfg
        hi = c.dm_max
        if c.dm_below_input:  # grid indices up to the step's input level (+ 0.5: int(hi * T) lands on it exactly)
            hi = min(hi, (self._input_level(step) + 0.5) / c.num_levels)
        sigma = self._level(x.shape[0], c.dm_min, hi, x.device)
        with torch.no_grad():
            x_t = x + expand(sigma, x) * torch.randn_like(x)
            d_real = guided_denoise(ctx.net("teacher"), x_t, sigma / c.teacher_sigma_scale, y, c.teacher_cfg,
                                    self.t_info["null_class"], c.teacher_cfg_interval)
            critic, y_c = ctx.net(critic_name), self.critic_labels(y, step)
            if c.divergence == "rkl":
                d_fake = critic(x_t, sigma, y_c)
            else:  # the discriminator's logit at x_t estimates log p_real / p_fake there (its optimum)
                d_fake, log_ratio = critic.with_logits(x_t, sigma, y_c)
            p_real, p_fake = x - d_real, x - d_fake
            w = p_real.abs().mean(dim=tuple(range(1, x.dim())), keepdim=True)
            g = (p_real - p_fake) / w
            if c.divergence == "rkl":
                return g
            h = density_ratio_weights(log_ratio, c.divergence, c.beta, c.alpha, c.ratio_range, self._dm_bin(sigma))
            if logs is not None:  # one sample carrying most of the batch's DM gradient shows here
                logs["h_max"] = float(h.max())
            return g * expand(h, g)

    def generator_step(self, ctx: StepContext, gen_name: str, critic_name: str, stream: str = "default") -> StepOut:
        batch = ctx.batch(stream)
        y = batch["labels"]
        x_in, s_in, k = self.generator_input(ctx.net(gen_name), y, batch["x"])
        x = ctx.net(gen_name)(x_in, s_in, y)
        logs = {}
        g = self.dm_grad(ctx, critic_name, x.detach(), y, logs, step=k)
        loss = loss_dm = surrogate_loss(x, g, scale=1.0 / x.numel())
        logs.update({"dm": float(loss_dm.detach()), "g_abs": float(g.abs().mean())})
        if self.cfg.regression_weight:
            loss_reg = self._regression_error(ctx.net(gen_name), ctx.batch("pairs"))
            loss = loss + self.cfg.regression_weight * loss_reg
            logs["reg"] = float(loss_reg.detach())
            if ctx.logged:
                with torch.no_grad():  # far above `reg`: the generator memorises its pairs, not the teacher's map
                    self._heldout = {k: v.to(x.device) for k, v in self._heldout.items()}  # moved once
                    logs["reg_heldout"] = float(self._regression_error(ctx.net(gen_name), self._heldout))
        if self.cfg.gan:
            x_gan, sigma = self._gan_input(x)
            logits = ctx.net(critic_name).logits(x_gan, sigma, self.critic_labels(y, k))
            loss_g = generator_gan_loss(logits)
            loss = loss + self.cfg.gan_weight_gen * loss_g
            logs["gan_g"] = float(loss_g.detach())
        if self.cfg.anchor_weight and k > 0:
            loss_anchor = self.anchor_error(ctx.net("teacher"), x, x_in, s_in, y)
            loss = loss + self.cfg.anchor_weight * loss_anchor
            logs["anchor"] = float(loss_anchor.detach())
        return StepOut(loss, logs)

    def anchor_error(self, teacher, x: torch.Tensor, x_in: torch.Tensor, s_in: torch.Tensor, y: torch.Tensor
                     ) -> torch.Tensor:
        """Mean squared distance of a step's outputs x from the teacher's ODE solution from that step's input."""
        target = edm_solve_from(teacher, x_in, float(s_in[0]), self.cfg.anchor_steps, y,
                                cfg_scale=self.cfg.teacher_cfg, null_class=self.t_info["null_class"],
                                cfg_interval=self.cfg.teacher_cfg_interval)
        return ((x - target) ** 2).mean()

    def critic_step(self, ctx: StepContext, critic_name: str, gen_name: str, stream: str = "default") -> StepOut:
        batch = ctx.batch(stream)
        y, real = batch["labels"], batch["x"]
        gan = ctx.batch(f"teacher_{stream}") if self.cfg.gan_real == "teacher" else batch
        with torch.no_grad():
            x_in, s_in, k = self.generator_input(ctx.net(gen_name), y, real)
            fake = ctx.net(gen_name)(x_in, s_in, y)
        b = fake.shape[0]
        sigma = self._level(b, 0.0, 1.0, fake.device)
        x_noisy = fake + expand(sigma, fake) * torch.randn_like(fake)
        y_c = self.critic_labels(y, k)  # with step_critic, real images face the step-k discriminator too
        if not self.cfg.gan:
            d = ctx.net(critic_name)(x_noisy, sigma, y_c)
        else:  # fake and real, each noised to its own level (diffusion GAN), through the same forward call
            gan_x, s_gan = self._gan_input(torch.cat([fake, gan["x"]]))
            d, logits = ctx.net(critic_name)(x_noisy, sigma, y_c, gan_x=gan_x, gan_sigma=s_gan,
                                             gan_labels=self.critic_labels(torch.cat([y, gan["labels"]]), k))
            lf, lr = logits[:b], logits[b:]
        loss_fake = (expand(loss_weight(sigma, self.sigma_data), fake) * (d - fake) ** 2).mean()
        loss, logs = loss_fake, {"denoise": float(loss_fake.detach())}
        if self.cfg.gan:
            loss_d = discriminator_gan_loss(lr, lf)
            loss = loss + self.cfg.gan_weight_critic * loss_d
            logs.update({"gan_d": float(loss_d.detach()), "d_real": float(torch.sigmoid(lr.detach()).mean()),
                         "d_fake": float(torch.sigmoid(lf.detach()).mean())})
        return StepOut(loss, logs)

    # ------------------------------------------------------------------ runs
    def info(self) -> dict:
        run = self._teacher()
        return {**continuous_info(load_dataset(self.data_cfg.name, self.data_cfg.data_dir)),
                "teacher": str(run.path), "teacher_sampler": run.info.get("sampler", {}),
                "gen_sigmas": self.gen_sigmas, "sampler": {}}

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        from fewstep.cli.commands import train_run

        teacher = train_run("edm", {"name": "digits"}, str(workdir / "teacher"),
                            overrides=["method.channels=[8,16]", "method.emb_dim=16", "train.steps=2",
                                       "train.batch_size=8"])
        return {"data": {"name": "digits"}, "method": {"teacher": str(teacher), "critic_updates": 2,
                                                       "gen_steps": 2}}

    @staticmethod
    def generate(nets: dict[str, torch.nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **opt: Any) -> torch.Tensor:
        return fewstep_sample(nets["generator"], labels, seeds, tuple(info["shape"]), info["gen_sigmas"],
                              opt.get("noise_scale"))

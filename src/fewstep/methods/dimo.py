"""Di[M]O: distill a masked diffusion teacher into a one-step generator (Zhu et al., arXiv 2503.15457).

Networks: teacher (frozen), generator and auxiliary model (both copies of the teacher, embeddings and the
tied head frozen, App. C). Per step (Algorithm 1):
  generator phase  x_init (hybrid init, §4.3) -> one forward -> logits z -> tokens x ~ softmax(z)
                   -> x_t = forward-mask(x) with the teacher's schedule (§4.2) -> teacher (CFG) and aux
                   logits at x_t, no grad -> g = dD(p_teacher || p_aux)/dz_aux at masked positions (Eq. 7)
                   -> surrogate 1/2 ||z - sg(z - g)||^2, whose gradient w.r.t. z is g.
  aux phase        fresh student samples, re-masked -> cross-entropy at masked positions (Eq. 3), label
                   smoothing 0.1 (official code).
Defaults follow the official code where it differs from the paper: divergence FKL (Jeffrey beta = 0),
normalisation 'sum' (sum over masked tokens / batch; the paper's Eq. 5 'mean' averages over masked
tokens), w(t) = 1, aux trained on a fresh student batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepContext, StepOut
from fewstep.methods.common.distribution_matching import (
    check_divergence, divergence_logit_grad, surrogate_loss,
)
from fewstep.methods.common.start import load_start_weights
from fewstep.processes.masked import forward_mask, get_schedule
from fewstep.samplers import check_cfg_scale
from fewstep.samplers.masked import categorical_from_uniform, guided_logits, hybrid_init, onestep_sample


@dataclass
class DiMOConfig:
    teacher: str = ""  # run folder of a masked teacher (fewstep train teacher)
    # a DiMO run of the same teacher to start the generator (its EMA weights) and aux from, instead of teacher
    # copies: continue a student under a new recipe (e.g. other guidance) with a fresh optimizer and LR schedule
    init_from: str | None = None
    divergence: str = "jeffrey"  # fkl | rkl | jeffrey | js | hellinger | pearson | neyman | alpha
    beta: float = 0.0  # Jeffrey: (1 - beta) FKL + beta RKL; 0 = FKL (official config), negative allowed
    alpha: float = 0.5  # alpha-divergence only
    r_init: float = 0.6  # fraction of [M] in the initial tokens (§4.3; 0.6 best on ImageNet)
    r_init_max: float | None = None  # if set, r_init ~ U[r_init, r_init_max] per sample
    sigma_init: float = 0.1  # variance-preserving embedding noise of the initial tokens
    teacher_cfg: float = 2.0  # guidance scale of the teacher during distillation
    # constant (official) | linear: 1 + (teacher_cfg - 1) t at the progress t of the re-masked sample, the
    # guidance the teacher's own MaskGIT sampler applies at that mask ratio
    teacher_cfg_ramp: str = "constant"
    teacher_temp: float = 1.0
    aux_temp: float = 1.0
    schedule: str | None = None  # forward masking of student samples; None = the teacher's schedule
    normalization: str = "sum"  # sum (official code) | mean (paper Eq. 5)
    aux_label_smoothing: float = 0.1
    aux_updates: int = 1  # auxiliary updates per generator update (paper D.10: more did not help)
    aux_lr: float | None = None  # None = train.lr
    fresh_aux_batch: bool = True  # aux learns from a new student batch (official code) or the generator's
    freeze_embeddings: bool = True
    generator_dropout: float = 0.0  # the teacher's dropout would make training samples differ from sampling
    # one-step sampler defaults (recorded in the run; `fewstep sample` flags override)
    sample_temperature: float = 1.0
    sample_top_k: int | None = None

    def __post_init__(self):
        check_divergence(self.divergence, self.alpha)
        if self.aux_lr is not None and not self.aux_lr > 0:
            raise ValueError("aux_lr must be > 0 (or null: train.lr)")
        if self.normalization not in ("sum", "mean"):
            raise ValueError("normalization must be 'sum' (official code) or 'mean' (paper Eq. 5)")
        if not 0.0 <= self.r_init <= 1.0 or (self.r_init_max is not None and not self.r_init <= self.r_init_max <= 1):
            raise ValueError("r_init must be in [0, 1] (and r_init <= r_init_max <= 1)")
        if not 0.0 <= self.sigma_init < 1.0:
            raise ValueError("sigma_init must be in [0, 1)")
        if self.schedule is not None:
            get_schedule(self.schedule)
        if not 0.0 <= self.generator_dropout < 1.0:
            raise ValueError("generator_dropout must be in [0, 1)")
        if self.teacher_cfg_ramp not in ("constant", "linear"):
            raise ValueError("teacher_cfg_ramp must be 'constant' (official code) or 'linear'")
        check_cfg_scale(self.teacher_cfg, "teacher_cfg")
        if self.aux_updates < 1:
            raise ValueError("aux_updates must be >= 1")


class DiMO(Method):
    name = "dimo"
    Config = DiMOConfig
    needs_data = False  # data-free: only class labels are sampled
    sampler_options = ("temperature", "top_k", "r_init", "sigma_init")

    def _teacher(self):
        if not hasattr(self, "_teacher_run"):
            from fewstep.runs import load_run

            if not self.cfg.teacher:
                raise FewstepError("DiMO needs a teacher: pass --teacher <run folder> (or method.teacher=...)")
            run = load_run(self.cfg.teacher)
            if run.info.get("kind") != "masked" or "model" not in run.nets:
                raise FewstepError(f"'{self.cfg.teacher}' is a '{run.method_name}' run, not a masked-diffusion teacher")
            self._teacher_run = run
        return self._teacher_run

    def build(self) -> dict[str, Net]:
        run = self._teacher()
        self.t_info = run.info
        teacher = run.nets["model"]
        frozen = tuple(teacher.embedding_parameters) if self.cfg.freeze_embeddings else ()
        generator = copy.deepcopy(teacher).set_dropout(self.cfg.generator_dropout)
        aux = copy.deepcopy(teacher)
        if self.cfg.init_from and not self.resuming:
            load_start_weights(self.cfg.init_from, self.name, {"generator": generator, "aux": aux})
        self.schedule = self.cfg.schedule or run.info["sampler"].get("schedule", "arccos")
        return {
            "teacher": Net(teacher),
            "generator": Net(generator, trainable=True, ema=True, frozen=frozen),
            "aux": Net(aux, trainable=True, frozen=frozen, lr=self.cfg.aux_lr),
        }

    def phases(self) -> list[Phase]:
        return [Phase("generator", self.generator_step, trains=("generator",)),
                Phase("aux", self.aux_step, trains=("aux",), repeat=self.cfg.aux_updates)]

    # ------------------------------------------------------------------ pieces
    def _student_forward(self, net, b: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labels, logits z (B, L, V) and sampled tokens x of a batch of one-step generations."""
        i = self.t_info
        L, V, M = i["seq_len"], i["vocab_size"], i["mask_id"]
        y = torch.randint(0, i["num_classes"], (b,), device=device)
        r = self.cfg.r_init
        if self.cfg.r_init_max is not None:
            r = self.cfg.r_init + (self.cfg.r_init_max - self.cfg.r_init) * torch.rand(b, device=device)
        x_init = hybrid_init(torch.rand(b, L, device=device), torch.rand(b, L, device=device), V, M, r)
        dim = self.generator_dim
        noise = torch.randn(b, L, dim, device=device) if self.cfg.sigma_init > 0 else None
        z = net(x_init, y, embed_noise=noise, noise_scale=self.cfg.sigma_init)
        probs = torch.softmax(z.detach().float(), -1)
        x = categorical_from_uniform(probs, torch.rand(b, L, device=device))
        return y, z, x

    @property
    def generator_dim(self) -> int:
        return self.t_info.get("embed_dim") or self._teacher().nets["model"].cfg.dim

    def generator_step(self, ctx: StepContext) -> StepOut:
        c, i = self.cfg, self.t_info
        b = ctx.batch_size
        y, z, x = self._student_forward(ctx.net("generator"), b, ctx.device)
        self._last = (y, x)
        t = torch.rand(b, device=ctx.device)
        x_t, mask = forward_mask(x, self.schedule, i["mask_id"], t=t)
        cfg = c.teacher_cfg if c.teacher_cfg_ramp == "constant" else 1.0 + (c.teacher_cfg - 1.0) * t
        with torch.no_grad():
            z_teacher = guided_logits(ctx.net("teacher"), x_t, y, cfg, i["null_class"]) / c.teacher_temp
            z_aux = ctx.net("aux")(x_t, y) / c.aux_temp
            g = divergence_logit_grad(z_teacher, z_aux, c.divergence, c.beta, c.alpha)
            g = g * mask[..., None]  # the divergence lives at masked positions only (Eq. 5)
        if c.normalization == "sum":
            scale = 1.0 / b
        else:
            scale = (1.0 / (b * mask.sum(1).clamp_min(1).float()))[:, None, None]
        loss = surrogate_loss(z.float(), g, scale)
        with torch.no_grad():
            p = torch.softmax(z.detach().float(), -1)
            ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            logs = {"g_norm": float(g.float().norm() / b), "student_entropy": float(ent),
                    "near_delta": float((p.max(-1).values > 0.999).float().mean()),
                    "teacher_aux_fkl": float(
                        (torch.softmax(z_teacher, -1) * (torch.log_softmax(z_teacher, -1)
                                                         - torch.log_softmax(z_aux, -1))).sum(-1)[mask].mean())}
        return StepOut(loss, logs)

    def aux_step(self, ctx: StepContext) -> StepOut:
        i = self.t_info
        with torch.no_grad():
            if self.cfg.fresh_aux_batch or not hasattr(self, "_last"):
                y, _, x = self._student_forward(ctx.net("generator"), ctx.batch_size, ctx.device)
            else:
                y, x = self._last
        x_t, mask = forward_mask(x, self.schedule, i["mask_id"])
        logits = ctx.net("aux")(x_t, y)
        loss = F.cross_entropy(logits[mask], x[mask], label_smoothing=self.cfg.aux_label_smoothing)
        return StepOut(loss)

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        from fewstep.cli.commands import train_run

        teacher = train_run("maskgit", {"name": "digits"}, str(workdir / "teacher"),
                            overrides=["method.dim=32", "method.depth=1", "method.heads=2", "train.steps=2",
                                       "train.batch_size=8"])
        return {"data": {"name": "digits"}, "method": {"teacher": str(teacher)}}

    # ------------------------------------------------------------------ runs
    def info(self) -> dict:
        i = dict(self.t_info)
        i.pop("sampler", None)
        c = self.cfg
        return {**i, "embed_dim": self.generator_dim, "teacher": str(self._teacher().path),
                "teacher_sampler": self.t_info.get("sampler", {}),
                "sampler": {"temperature": c.sample_temperature, "top_k": c.sample_top_k,
                            "r_init": c.r_init if c.r_init_max is None else 0.5 * (c.r_init + c.r_init_max),
                            "sigma_init": c.sigma_init}}

    @staticmethod
    def generate(nets: dict[str, torch.nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **opt: Any) -> torch.Tensor:
        o = {**info["sampler"], **{k: v for k, v in opt.items() if v is not None}}
        return onestep_sample(nets["generator"], labels, seeds, seq_len=info["seq_len"],
                              vocab_size=info["vocab_size"], mask_id=info["mask_id"], embed_dim=info["embed_dim"],
                              r_init=float(o["r_init"]), sigma_init=float(o["sigma_init"]),
                              temperature=float(o["temperature"]), top_k=o["top_k"])

"""The masked-diffusion teacher: MaskGIT training (Chang et al. 2022) on the shared trainer.

Loss: cross-entropy at the masked positions of x_t ~ q(x_t | x_0) with exact-count masking and a
mask schedule (arccos default); class labels dropped to the null class with probability 10% so the
same network serves classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.data import load_dataset
from fewstep.methods.base import Method, Net, Phase, StepContext, StepOut
from fewstep.models.masked_transformer import MaskedTransformer, MaskedTransformerConfig
from fewstep.processes.masked import forward_mask, get_schedule
from fewstep.samplers.masked import maskgit_sample
from fewstep.tokenizers import resolve_tokenizer, tokenized_split


@dataclass
class MaskGITConfig:
    dim: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    schedule: str = "arccos"  # arccos | cosine | linear
    label_dropout: float = 0.1
    label_smoothing: float = 0.1
    # default sampler of this teacher (recorded in the run; `fewstep sample` flags override)
    sample_steps: int = 16
    sample_cfg: float = 2.0
    sample_cfg_ramp: str = "constant"  # constant | linear
    sample_temperature: float = 1.0
    sample_remask: str = "confidence"  # confidence (MaskGIT) | random (DiMO's teacher setting)
    sample_gumbel_temp: float = 4.5

    def __post_init__(self):
        get_schedule(self.schedule)
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError("label_dropout must be in [0, 1)")


MASKED_SAMPLER_OPTIONS = ("steps", "cfg", "cfg_ramp", "temperature", "remask", "gumbel_temp", "top_k", "schedule",
                          "desmooth")


def masked_info(tokenizer, dataset, seq_len: int) -> dict:
    return {
        "kind": "masked", "dataset": dataset.name, "tokenizer": tokenizer.spec(),
        "vocab_size": tokenizer.vocab_size, "seq_len": seq_len, "grid": list(tokenizer.grid),
        "num_classes": dataset.num_classes, "mask_id": tokenizer.vocab_size, "null_class": dataset.num_classes,
    }


class MaskGIT(Method):
    name = "maskgit"
    Config = MaskGITConfig
    sample_nets = ("model",)

    def _data(self):
        if not hasattr(self, "_tok"):
            self._dataset = load_dataset(self.data_cfg.name, self.data_cfg.data_dir)
            self._tok = resolve_tokenizer(self.data_cfg)
        return self._dataset, self._tok

    def build(self) -> dict[str, Net]:
        dataset, tok = self._data()
        c = self.cfg
        seq_len = 1
        for s in tok.grid:
            seq_len *= s
        self.model_cfg = MaskedTransformerConfig(
            vocab_size=tok.vocab_size, seq_len=seq_len, num_classes=dataset.num_classes,
            dim=c.dim, depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout,
        )
        return {"model": Net(MaskedTransformer(self.model_cfg), trainable=True, ema=True)}

    def training_data(self) -> dict[str, torch.Tensor]:
        dataset, tok = self._data()
        return {"tokens": tokenized_split(dataset, tok, "train"), "labels": dataset.train_labels}

    def phases(self) -> list[Phase]:
        return [Phase("denoise", self.denoise_step, trains=("model",))]

    def denoise_step(self, ctx: StepContext) -> StepOut:
        batch = ctx.batch()
        x0, y = batch["tokens"], batch["labels"]
        mask_id, null = self.model_cfg.vocab_size, self.model_cfg.num_classes
        drop = torch.rand(y.shape, device=y.device) < self.cfg.label_dropout
        y = torch.where(drop, torch.full_like(y, null), y)
        x_t, mask = forward_mask(x0, self.cfg.schedule, mask_id)
        logits = ctx.net("model")(x_t, y)
        loss = F.cross_entropy(logits[mask], x0[mask], label_smoothing=self.cfg.label_smoothing)
        with torch.no_grad():
            acc = (logits[mask].argmax(-1) == x0[mask]).float().mean()
        return StepOut(loss, {"token_acc": float(acc)})

    def info(self) -> dict:
        dataset, tok = self._data()
        c = self.cfg
        return {
            **masked_info(tok, dataset, self.model_cfg.seq_len),
            "sampler": {"steps": c.sample_steps, "cfg": c.sample_cfg, "cfg_ramp": c.sample_cfg_ramp,
                        "temperature": c.sample_temperature, "remask": c.sample_remask,
                        "gumbel_temp": c.sample_gumbel_temp, "top_k": None, "schedule": c.schedule},
        }

    sampler_options = MASKED_SAMPLER_OPTIONS

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        return {"data": {"name": "digits"}, "method": {"dim": 32, "depth": 1, "heads": 2}}

    @staticmethod
    def generate(nets: dict[str, torch.nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **opt: Any) -> torch.Tensor:
        o = {**info["sampler"], **{k: v for k, v in opt.items() if v is not None}}
        return maskgit_sample(
            nets["model"], labels, seeds, seq_len=info["seq_len"], mask_id=info["mask_id"],
            null_class=info["null_class"], steps=int(o["steps"]), schedule=o["schedule"],
            cfg_scale=float(o["cfg"]), cfg_ramp=o["cfg_ramp"], temperature=float(o["temperature"]),
            remask=o["remask"], gumbel_temp=float(o["gumbel_temp"]), top_k=o["top_k"],
            desmooth=float(o.get("desmooth") or 0.0),
        )

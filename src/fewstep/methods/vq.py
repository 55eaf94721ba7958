"""Training the VQ tokenizer on the shared trainer: reconstruction + commitment loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepContext, StepOut
from fewstep.models.vq import VQConfig, VQModel


@dataclass
class VQTrainConfig:
    channels: int = 64
    stem_channels: int = 32
    downsample: int = 2
    codebook_size: int = 256
    code_dim: int = 32
    beta: float = 0.25
    ema_decay: float = 0.99
    l1_weight: float = 1.0  # L1 + MSE reconstruction keeps edges sharper than MSE alone


class VQTokenizerMethod(Method):
    name = "vq"
    Config = VQTrainConfig
    sample_nets = ("tokenizer",)
    generative = False

    def _dataset(self):
        ds = load_dataset(self.data_cfg.name, self.data_cfg.data_dir)
        if not ds.has_images:
            raise FewstepError(f"dataset '{ds.name}' has no images to train a tokenizer on")
        return ds

    def build(self) -> dict[str, Net]:
        ds = self._dataset()
        c = self.cfg
        _, ch, h, w = ds.train_images.shape
        if h != w or h % 2 ** c.downsample:
            raise FewstepError(f"image size {h}x{w} is not square or not divisible by 2^{c.downsample}")
        self.model_cfg = VQConfig(in_channels=ch, image_size=h, channels=c.channels, stem_channels=c.stem_channels,
                                  downsample=c.downsample,
                                  codebook_size=c.codebook_size, code_dim=c.code_dim, beta=c.beta,
                                  ema_decay=c.ema_decay)
        return {"tokenizer": Net(VQModel(self.model_cfg), trainable=True)}

    def training_data(self) -> dict[str, torch.Tensor]:
        return {"images": self._dataset().train_images}

    def phases(self) -> list[Phase]:
        return [Phase("reconstruct", self.reconstruct_step, trains=("tokenizer",))]

    def reconstruct_step(self, ctx: StepContext) -> StepOut:
        x = ctx.batch()["images"]
        recon, idx, commit = ctx.net("tokenizer")(x)
        mse = F.mse_loss(recon, x)
        loss = mse + self.cfg.l1_weight * F.l1_loss(recon, x) + self.cfg.beta * commit
        used = idx.unique().numel()
        return StepOut(loss, {"mse": float(mse.detach()), "codes_used": used})

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        return {"data": {"name": "digits"}, "method": {"channels": 16, "stem_channels": 8, "downsample": 1,
                                                     "codebook_size": 8, "code_dim": 4}}

    def info(self) -> dict:
        ds = self._dataset()
        return {"kind": "tokenizer", "dataset": ds.name, "grid": [ds.train_images.shape[-1] // 2 ** self.cfg.downsample] * 2,
                "vocab_size": self.cfg.codebook_size}

"""The continuous teacher: an EDM-preconditioned denoiser (Karras et al. 2022) on the shared trainer.

Images live in [-1, 1] (sigma_data = 0.5); 2-D points as they are. Loss (EDM Eq. 8 / Table 1):
lambda(sigma) ||D(x + sigma n; sigma, y) - x||^2 with ln sigma ~ N(-1.2, 1.2^2); labels dropped to the
null class with probability 10% for classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepContext, StepOut
from fewstep.models.unet import MLPConfig, MLPDenoiser, UNetConfig, UNetDenoiser
from fewstep.processes.gaussian import expand, loss_weight, sample_sigma
from fewstep.samplers.gaussian import edm_sample


@dataclass
class EDMConfig:
    channels: tuple[int, ...] = (32, 64)  # UNet width per resolution level (images)
    blocks_per_level: int = 1
    emb_dim: int = 128
    attention: bool = False
    dropout: float = 0.0
    mlp_hidden: int = 256  # 2-D data
    mlp_depth: int = 3
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    label_dropout: float = 0.1
    sample_steps: int = 18
    sample_solver: str = "heun"  # heun | euler
    sample_cfg: float = 1.0

    def __post_init__(self):
        check_widths("channels", self.channels)
        for name in ("blocks_per_level", "emb_dim", "mlp_hidden", "mlp_depth", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.label_dropout < 1.0):
            raise ValueError("dropout and label_dropout must be in [0, 1)")
        if self.sigma_data <= 0 or self.p_std <= 0 or self.sample_cfg < 0:
            raise ValueError("sigma_data and p_std must be > 0, sample_cfg >= 0")
        if self.sample_solver not in ("heun", "euler"):
            raise ValueError(f"sample_solver must be heun or euler, got {self.sample_solver!r}")


def check_widths(name: str, widths) -> None:
    """A UNet's per-level widths: at least one level, each a positive integer."""
    if not widths or any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"{name} must list one positive integer width per resolution level, e.g. [32, 64]; "
                         f"got {list(widths) if widths is not None else widths}")


def check_levels(name: str, widths, size: int) -> None:
    """Each level halves the image, so the size must be divisible by 2^(levels - 1)."""
    if size % 2 ** (len(widths) - 1):
        raise FewstepError(f"{len(widths)} resolution levels in {name} halve {size}x{size} images "
                           f"{len(widths) - 1} times, which needs a size divisible by {2 ** (len(widths) - 1)}; "
                           f"use at most {(size & -size).bit_length()} levels")


def continuous_training_data(dataset) -> dict[str, torch.Tensor]:
    """Model-space data: images mapped to [-1, 1], or 2-D points."""
    if dataset.train_points is not None:
        return {"x": dataset.train_points, "labels": dataset.train_labels}
    return {"x": dataset.train_images * 2.0 - 1.0, "labels": dataset.train_labels}


def require_edm_teacher(path: str, device=None):
    """Load a run and check it is an EDM teacher (what DMD2, MSD and their benchmarks distill)."""
    from fewstep.runs import load_run

    run = load_run(path, device=device)
    if run.info.get("kind") not in ("continuous", "points") or "model" not in run.nets:
        raise FewstepError(f"'{path}' is a '{run.method_name}' run, not a continuous (EDM) teacher; "
                           "train one with: fewstep train teacher --kind edm --data <dataset>")
    return run


def continuous_info(dataset) -> dict:
    shape = [2] if dataset.train_points is not None else list(dataset.train_images.shape[1:])
    return {"kind": "points" if dataset.train_points is not None else "continuous", "dataset": dataset.name,
            "shape": shape, "num_classes": dataset.num_classes, "null_class": dataset.num_classes}


class EDM(Method):
    name = "edm"
    Config = EDMConfig
    sample_nets = ("model",)
    sampler_options = ("steps", "cfg", "solver", "noise_scale", "sigma_scale", "cfg_interval")

    def _dataset(self):
        return load_dataset(self.data_cfg.name, self.data_cfg.data_dir)

    def build(self) -> dict[str, Net]:
        ds, c = self._dataset(), self.cfg
        if ds.train_points is not None:
            net = MLPDenoiser(MLPConfig(dim=2, hidden=c.mlp_hidden, depth=c.mlp_depth, num_classes=ds.num_classes,
                                        emb_dim=c.emb_dim, sigma_data=c.sigma_data))
        else:
            ch, size = ds.train_images.shape[1], ds.train_images.shape[-1]
            check_levels("method.channels", c.channels, size)
            net = UNetDenoiser(UNetConfig(in_channels=ch, image_size=size, channels=tuple(c.channels),
                                          blocks_per_level=c.blocks_per_level, num_classes=ds.num_classes,
                                          emb_dim=c.emb_dim, attention=c.attention, dropout=c.dropout,
                                          sigma_data=c.sigma_data))
        return {"model": Net(net, trainable=True, ema=True)}

    def training_data(self) -> dict[str, torch.Tensor]:
        return continuous_training_data(self._dataset())

    def phases(self) -> list[Phase]:
        return [Phase("denoise", self.denoise_step, trains=("model",))]

    def denoise_step(self, ctx: StepContext) -> StepOut:
        batch = ctx.batch()
        x, y = batch["x"], batch["labels"]
        drop = torch.rand(y.shape, device=y.device) < self.cfg.label_dropout
        y = torch.where(drop, torch.full_like(y, self._dataset().num_classes), y)
        sigma = sample_sigma(len(x), self.cfg.p_mean, self.cfg.p_std, x.device)
        d = ctx.net("model")(x + expand(sigma, x) * torch.randn_like(x), sigma, y)
        loss = (expand(loss_weight(sigma, self.cfg.sigma_data), x) * (d - x) ** 2).mean()
        return StepOut(loss)

    def info(self) -> dict:
        c = self.cfg
        return {**continuous_info(self._dataset()),
                "sampler": {"steps": c.sample_steps, "solver": c.sample_solver, "cfg": c.sample_cfg}}

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        return {"data": {"name": "digits"}, "method": {"channels": [8, 16], "emb_dim": 16}}

    @staticmethod
    def generate(nets: dict[str, torch.nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **opt: Any) -> torch.Tensor:
        o = {**info["sampler"], **{k: v for k, v in opt.items() if v is not None}}
        return edm_sample(nets["model"], labels, seeds, tuple(info["shape"]), steps=int(o["steps"]),
                          solver=o["solver"], cfg_scale=float(o["cfg"]), null_class=info["null_class"],
                          noise_scale=o.get("noise_scale"), sigma_scale=o.get("sigma_scale"),
                          cfg_interval=o.get("cfg_interval"))

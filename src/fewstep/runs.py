"""Loading a trained run for sampling and evaluation (no trainer, no optimizer state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fewstep import checkpoint as ckpt_io
from fewstep.errors import FewstepError


@dataclass
class Run:
    path: Path  # the checkpoint step folder
    config: dict
    meta: dict
    info: dict
    nets: dict[str, nn.Module]

    @property
    def method_name(self) -> str:
        return self.config["method"]["name"]

    @property
    def method_cls(self):
        from fewstep.methods import get_method

        return get_method(self.method_name)

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def generate(self, labels: torch.Tensor, seeds: list[int], **options) -> torch.Tensor:
        cls = self.method_cls
        allowed = getattr(cls, "sampler_options", ())
        bad = [k for k, v in options.items() if v is not None and k not in allowed]
        if bad:
            raise FewstepError(f"sampler option(s) {', '.join(bad)} do not apply to '{self.method_name}' runs; "
                               f"it takes: {', '.join(allowed) or 'none'}")
        try:
            return cls.generate(self.nets, self.info, labels, seeds, **options)
        except ValueError as e:  # a sampler's own check of an option value
            raise FewstepError(f"bad sampler option: {e}") from None


def load_run(path: str | Path, device: torch.device | str = "cpu", prefer_ema: bool = True) -> Run:
    from fewstep.models import build_model

    ckpt = ckpt_io.resolve_checkpoint(path)
    config, meta = ckpt_io.read_checkpoint_json(ckpt)
    if "networks" not in config or "method" not in config:
        raise FewstepError(f"'{ckpt}/config.json' is not a fewstep checkpoint config (no networks/method)")
    nets = {}
    for name in config.get("trainable", []):
        spec = config["networks"].get(name)
        if spec is None:
            continue
        module = build_model(spec)
        ckpt_io.load_weights(module, ckpt_io.sampling_weights(ckpt, name) if prefer_ema else ckpt / f"{name}.safetensors")
        nets[name] = module.to(device).eval().requires_grad_(False)
    return Run(path=ckpt, config=config, meta=meta, info=config.get("info", {}), nets=nets)

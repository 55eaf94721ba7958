"""Networks that can be rebuilt from a JSON spec: {"type": <registry name>, "config": {...}}."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fewstep.config import from_dict, to_dict


class SpecModule(nn.Module):
    """A module whose constructor takes one config dataclass, so a checkpoint can rebuild it."""

    model_type: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg

    def spec(self) -> dict:
        return {"type": self.model_type, "config": to_dict(self.cfg)}

    @classmethod
    def from_config_dict(cls, data: dict) -> "SpecModule":
        return cls(from_dict(cls.Config, data))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

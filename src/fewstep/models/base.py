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

    def set_dropout(self, p: float) -> "SpecModule":
        """Change the dropout rate in place (and in the saved config), e.g. for a student copied from a teacher."""
        if hasattr(self.cfg, "dropout"):
            self.cfg.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

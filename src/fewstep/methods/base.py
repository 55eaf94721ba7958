"""The method contract. A method declares networks and phases; the trainer does everything with side effects.

A method never calls backward(), an optimizer, or saves anything. Each phase step returns a loss; the
trainer enables gradients only on `phase.trains`, back-propagates, clips, guards against NaN, steps
the optimizers of those networks and updates their EMA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn


@dataclass
class Net:
    """A named network and its role."""

    module: nn.Module
    trainable: bool = False
    ema: bool = False  # keep an EMA copy; sampling uses it when present
    lr: float | None = None  # None: train.lr
    frozen: tuple[str, ...] = ()  # parameter-name prefixes that stay fixed inside a trainable net
    grad_clip: float | None = -1.0  # -1: use train.grad_clip; None: never clip this network

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        if not self.trainable:
            return []
        return [(n, p) for n, p in self.module.named_parameters() if not n.startswith(self.frozen)]


@dataclass
class StepOut:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class Phase:
    """One update of the networks in `trains`, `repeat` times, on steps in [start, stop) where step % every == 0."""

    name: str
    step: Callable[["StepContext"], StepOut]
    trains: tuple[str, ...]
    every: int = 1
    repeat: int = 1
    start: int = 0
    stop: int | None = None

    def active(self, step: int) -> bool:
        return step >= self.start and (self.stop is None or step < self.stop) and step % self.every == 0


@dataclass
class StepContext:
    step: int
    phase: Phase
    batch_size: int
    device: torch.device
    wrapped: dict[str, nn.Module]  # accelerate-prepared modules (DDP when distributed)
    raw: dict[str, nn.Module]  # the plain modules
    next_batch: Callable[[str], dict[str, torch.Tensor]]
    logged: bool = True  # this step's logs are written: diagnostics that cost compute need to run only then

    def net(self, name: str) -> nn.Module:
        """The network to call: wrapped if this phase trains it (so DDP syncs grads), plain otherwise."""
        return self.wrapped[name] if name in self.phase.trains else self.raw[name]

    def batch(self, stream: str = "default") -> dict[str, torch.Tensor]:
        return self.next_batch(stream)


class Method:
    """Base class. Subclasses set `name`, `Config`, and implement build/phases/generate."""

    name: ClassVar[str]
    Config: ClassVar[type]
    needs_data: ClassVar[bool] = True  # the trainer streams (tokenised) training data when True
    sample_nets: ClassVar[tuple[str, ...]] = ("generator",)  # networks generate() needs
    # set by the trainer before build() when a checkpoint will overwrite the networks: starting weights
    # loaded from elsewhere (DiMO's init_from) are then not needed
    resuming: bool = False

    def __init__(self, cfg: Any, data_cfg: Any):
        self.cfg = cfg
        self.data_cfg = data_cfg

    @classmethod
    def can_start_from_run(cls) -> bool:
        """Whether method.init_from exists: a config's finetune section needs it to start from the first run."""
        return "init_from" in {f.name for f in dataclasses.fields(cls.Config)}

    def build(self) -> dict[str, Net]:
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def stage_steps(self) -> int:
        """Steps of a stage run before the train.steps budget (MSD's TSM pre-training); the trainer adds them."""
        return 0

    def training_data(self) -> dict[str, torch.Tensor] | dict[str, dict[str, torch.Tensor]]:
        """Tensors the trainer streams batches from (all of equal length), when needs_data is True.

        Either one stream {"x": .., "labels": ..} or named streams {"part0": {...}, "part1": {...}}
        (ctx.batch(name)); each stream keeps its own resumable position.
        """
        raise NotImplementedError

    def info(self) -> dict:
        """JSON facts sampling and evaluation need (token grid, classes, tokenizer, teacher path...)."""
        return {}

    def on_step_end(self, nets: dict[str, nn.Module], step: int) -> None:
        """Optional hook (target-EMA updates, teacher swaps); default does nothing."""

    @staticmethod
    def generate(nets: dict[str, nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **options: Any) -> torch.Tensor:
        """Samples for `labels`, one per seed (reproducible whatever the batch). Returns tokens or images."""
        raise NotImplementedError

    @classmethod
    def contract_setup(cls, workdir: Path) -> dict:
        """A tiny experiment ({"data": .., "method": .., "train": ..} overrides) that runs in seconds on a CPU.

        The method contract tests (tests/test_method_contract.py) run every registered method with it.
        """
        raise NotImplementedError(f"method '{cls.name}' must define contract_setup() for the contract tests")

    @classmethod
    def default_config(cls) -> Any:
        return cls.Config()

    @classmethod
    def config_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Config)]

"""Starting weights from an earlier run (`method.init_from`, the finetune stage): the same method, or DMD2 for MSD."""

from __future__ import annotations

from torch import nn

from fewstep import checkpoint as ckpt_io
from fewstep.errors import FewstepError


def start_run_config(init_from: str) -> dict:
    """The method options an init_from run was trained with."""
    config, _ = ckpt_io.read_checkpoint_json(ckpt_io.resolve_checkpoint(init_from))
    return config.get("method", {})


def start_run_method(init_from: str) -> str | None:
    """The method an init_from run was trained with."""
    return start_run_config(init_from).get("name")


def load_start_weights(init_from: str, method_name: str, modules: dict[str, nn.Module],
                       sources: dict[str, str] | None = None) -> None:
    """Load each module from the run's EMA weights where it kept them (the weights its samples came from),
    else its live ones; `sources` names the run's network a module loads where the names differ. Only
    weights: the optimizer and LR schedule start afresh."""
    ckpt = ckpt_io.resolve_checkpoint(init_from)
    found = start_run_method(ckpt)  # the step folder resolved once: its method and its weights are the same step's
    if found != method_name:
        raise FewstepError(f"method.init_from: '{init_from}' holds a {found} run; pass a {method_name} run "
                           "of the same teacher")
    for name, module in modules.items():
        try:
            ckpt_io.load_weights(module, ckpt_io.sampling_weights(ckpt, (sources or {}).get(name, name)))
        except FewstepError as e:
            raise FewstepError(f"method.init_from: the {name} of '{init_from}' does not fit this run's network "
                               f"({e}); use a run distilled from the same teacher with the same network sizes") from None

"""Training hooks the CLI attaches: in-training evaluation of the networks sampling would use."""

from __future__ import annotations

import json
from pathlib import Path

from fewstep.errors import FewstepError
from fewstep.runlog import say
from fewstep.runs import Run
from fewstep.trainer import TrainState


def append_eval_line(run_dir: Path, step: int, result: dict, **setting) -> dict:
    """Append one evaluation (metrics, samples/s and the settings it ran with) to <run>/eval.jsonl."""
    line = {"step": step, **result["metrics"], "samples_per_s": result["samples_per_s"], **setting}
    with open(Path(run_dir) / "eval.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def eval_hook(n: int | None = None, **sampler_options):
    """Evaluate the EMA networks (FID etc. or exact metrics) and append a line to <run>/eval.jsonl."""

    def hook(state: TrainState) -> None:
        if not state.is_main:
            return
        from fewstep.metrics.evaluate import evaluate_run

        run = Run(path=state.run_dir, config=state.method.full_config, meta={"step": state.step},
                  info=state.method.info(), nets=state.nets)
        try:
            res = evaluate_run(run, n=n, **sampler_options)
        except FewstepError as e:  # e.g. an MSD run of some students only: training goes on unevaluated
            say(f"step {state.step}: not evaluated: {e}")
            return
        append_eval_line(state.run_dir, state.step, res)
        shown = {k: round(v, 3) for k, v in res["metrics"].items() if k in ("fid", "class_acc", "pair_kl", "energy")}
        say(f"step {state.step}: {shown}")

    return hook

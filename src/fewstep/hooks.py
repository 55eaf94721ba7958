"""Training hooks the CLI attaches: in-training evaluation of the networks sampling would use."""

from __future__ import annotations

import json

from fewstep.runlog import say
from fewstep.runs import Run
from fewstep.trainer import TrainState


def eval_hook(n: int | None = None, **sampler_options):
    """Evaluate the EMA networks (FID etc. or exact metrics) and append a line to <run>/eval.jsonl."""

    def hook(state: TrainState) -> None:
        if not state.is_main:
            return
        from fewstep.metrics.evaluate import evaluate_run

        run = Run(path=state.run_dir, config=state.method.full_config, meta={"step": state.step},
                  info=state.method.info(), nets=state.nets)
        res = evaluate_run(run, n=n, **sampler_options)
        line = {"step": state.step, **res["metrics"], "samples_per_s": res["samples_per_s"]}
        with open(state.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        shown = {k: round(v, 3) for k, v in res["metrics"].items() if k in ("fid", "class_acc", "pair_kl", "energy")}
        say(f"step {state.step}: {shown}")

    return hook

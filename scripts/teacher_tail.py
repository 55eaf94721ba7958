"""Score a few-step DMD2 run with its last steps taken by its teacher's ODE instead.

    python scripts/teacher_tail.py RUN THRESHOLD M OUT.json [N] [REPEATS]

The generator's steps from levels >= THRESHOLD run as trained; at the first level below it the teacher's Heun ODE
takes over: M steps on a Karras grid from that level to 0 (M = 1 is the teacher's one-shot denoiser). Scored like
`fewstep eval --run RUN --n N --repeats REPEATS --json OUT.json` (default n = 4,000, 3 blocks), so `fewstep compare`
pairs it with the run's own evals. It asks whether a step's input is worth refining at all: if the teacher from
there scores worse than stopping before that step, no training of that step can help (docs/BENCHMARKS.md, "Past
1,000 steps").
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fewstep.errors import FewstepError  # noqa: E402
from fewstep.samplers.gaussian import edm_solve_from  # noqa: E402


class TeacherTail(torch.nn.Module):
    """A generator whose calls below `threshold` return the teacher's M-step ODE solution from that level."""

    def __init__(self, generator: torch.nn.Module, teacher: torch.nn.Module, threshold: float, m: int):
        super().__init__()
        self.generator, self.teacher, self.threshold, self.m = generator, teacher, threshold, m

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if float(sigma[0]) >= self.threshold:
            return self.generator(x, sigma, labels)
        return edm_solve_from(self.teacher, x, float(sigma[0]), self.m, labels)


def with_teacher_tail(run_path: str, threshold: float, m: int):
    from fewstep.methods.edm import require_edm_teacher
    from fewstep.runs import load_run

    run = load_run(run_path)
    sigmas = run.info.get("gen_sigmas") or []
    if run.method_cls.name != "dmd2" or len(sigmas) < 2:
        raise FewstepError(f"'{run_path}' is not a few-step dmd2 run; pass a run trained with method.gen_steps > 1")
    if not sigmas[-1] < threshold <= sigmas[0]:
        raise FewstepError(f"threshold {threshold:g} leaves no step to the teacher or none to the generator; pass a "
                           f"level in ({sigmas[-1]:.3g}, {sigmas[0]:.3g}] (the run's steps: {sigmas})")
    teacher = require_edm_teacher(run.config["method"]["teacher"]).nets["model"].eval()
    run.nets["generator"] = TeacherTail(run.nets["generator"], teacher, threshold, m)
    return run


def main(argv: list[str]) -> None:
    usage = "usage: python scripts/teacher_tail.py RUN THRESHOLD M OUT.json [N] [REPEATS]   (M, N, REPEATS >= 1)"
    try:
        threshold, m = float(argv[1]), int(argv[2])
        n, repeats = (int(v) for v in (argv[4:6] + ["4000", "3"][len(argv[4:6]):]))
    except (IndexError, ValueError):
        sys.exit(usage)
    if len(argv) > 6 or min(m, n, repeats) < 1 or not threshold > 0:
        sys.exit(usage)
    from fewstep.api import evaluate
    from fewstep.checkpoint import write_json_atomic

    try:
        res = evaluate(with_teacher_tail(argv[0], threshold, m), n, repeats)
    except FewstepError as e:
        sys.exit(f"error: {e}")
    write_json_atomic(argv[3], res)
    print(f"fid {res['metrics']['fid']:.4g} over {repeats} block(s) of n = {n} -> {argv[3]}")


if __name__ == "__main__":
    main(sys.argv[1:])

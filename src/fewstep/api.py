"""The CLI's verbs as functions: train a teacher, distill it, evaluate, load. Bad input raises FewstepError.

    from fewstep.api import train_teacher, distill, evaluate
    teacher = train_teacher("digits", "runs/edm", kind="edm")
    student = distill("dmd2", teacher, "runs/dmd2", overrides=["train.steps=1000"])
    print(evaluate(student, n=4000, repeats=3)["metrics"]["fid"])
    print(compare(evaluate(teacher, n=4000, repeats=3), evaluate(student, n=4000, repeats=3))["diff"])
"""

from __future__ import annotations

from pathlib import Path

from fewstep.runs import Run, load_run

__all__ = ["Run", "compare", "distill", "evaluate", "load_run", "train_teacher"]


def train_teacher(data: str, out: str | Path | None = None, *, kind: str = "maskgit", data_dir: str | None = None,
                  tokenizer: str | None = None, overrides: list[str] = (), config: str | None = None,
                  fresh: bool = False) -> Run:
    """`fewstep train teacher --kind KIND --data DATA`: kind is maskgit (masked) or edm (continuous)."""
    from fewstep.cli.commands import train_run

    folder = train_run(kind, {"name": data, "data_dir": data_dir, "tokenizer": tokenizer}, _str(out), config,
                       list(overrides), fresh)
    return load_run(folder)


def distill(method: str, teacher: str | Path | Run, out: str | Path | None = None, *, overrides: list[str] = (),
            config: str | None = None, fresh: bool = False) -> Run:
    """`fewstep distill METHOD --teacher TEACHER`: the student trains on the teacher's dataset."""
    from fewstep.cli.commands import distill_run

    folder = distill_run(method, _str(teacher.path if isinstance(teacher, Run) else teacher), _str(out), config,
                         list(overrides), fresh)
    return load_run(folder)


def evaluate(run: str | Path | Run, n: int | None = None, repeats: int = 1, on_block=None, **sampler_options) -> dict:
    """`fewstep eval`: {"metrics": {...}} with each metric's mean over `repeats` seed blocks (and its _std).
    on_block(result so far) is called after every block but the last."""
    from fewstep.bench.common import repeated_eval
    from fewstep.cli.commands import run_root
    from fewstep.errors import FewstepError

    if repeats < 1 or (n is not None and n < 2):
        raise FewstepError("evaluate needs repeats >= 1 and n >= 2 (or n=None: the test split's size)")
    run = run if isinstance(run, Run) else load_run(run)
    if not getattr(run.method_cls, "generative", True):
        raise FewstepError(f"'{run.path}' is a tokenizer run; its reconstruction report is {run_root(run)}/recon.json")
    return repeated_eval(run, n, repeats, on_block=on_block, **sampler_options)


def compare(base: dict, other: dict, metric: str = "fid") -> dict:
    """`fewstep compare`: other − base over the seed blocks two `evaluate` results share ("diff", "diff_se", ...)."""
    from fewstep.metrics.paired import paired_difference

    return paired_difference(base, other, metric)


def _str(path) -> str | None:
    return None if path is None else str(path)

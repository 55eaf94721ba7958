"""Run logging: JSONL stats (one object per line) and a progress bar with loss and ETA."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from fewstep.errors import FewstepError


class JsonlLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSONL file, [] where it does not exist."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_curve(run_dir: str | Path, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `metric` from <run>/eval.jsonl (evaluations), else <run>/stats.jsonl (training logs)."""
    run_dir, seen = Path(run_dir), set()
    for name in ("eval.jsonl", "stats.jsonl"):
        path = run_dir / name
        if not path.exists():
            continue
        rows = read_jsonl(path)
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None and "step" in r]
        if points:
            steps, values = zip(*sorted(dict(points).items()))
            return list(steps), [float(v) for v in values]
        seen.update(k for r in rows for k in r if k not in ("step", "time"))
    if not seen:
        raise FewstepError(f"'{run_dir}' has no eval.jsonl or stats.jsonl; pass a run folder written by fewstep")
    raise FewstepError(f"no '{metric}' in '{run_dir}'; it has: {', '.join(sorted(seen))}")


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def progress(total: int, initial: int = 0, desc: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar (ETA included), rank 0 only; FEWSTEP_PROGRESS=0 silences it (tests)."""
    disable = (not enabled) or not _rank0() or os.environ.get("FEWSTEP_PROGRESS", "1") == "0"
    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)


def say(msg: str) -> None:
    """Status line for humans (stderr, so stdout stays clean for machine output); rank 0 only."""
    if os.environ.get("FEWSTEP_QUIET", "0") != "1" and _rank0():
        print(msg, file=sys.stderr, flush=True)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

"""Run logging: JSONL stats (one object per line) and a progress bar with loss and ETA."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm


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


def progress(total: int, initial: int = 0, desc: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar (ETA included); FEWSTEP_PROGRESS=0 silences it (tests)."""
    disable = (not enabled) or os.environ.get("FEWSTEP_PROGRESS", "1") == "0"
    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)


def say(msg: str) -> None:
    """Status line for humans (stderr, so stdout stays clean for machine output); rank 0 only."""
    if os.environ.get("FEWSTEP_QUIET", "0") != "1" and os.environ.get("RANK", "0") == "0":
        print(msg, file=sys.stderr, flush=True)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

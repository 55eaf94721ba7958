"""Paired comparison of two `fewstep eval` results, seed block by seed block.

Block r of every eval draws the same noise and labels, so the difference of two models on one block cancels most of
the block's own luck: at n = 2,000 fashion_mnist blocks spread by ~0.5 FID, the paired differences of two students by
~0.05. The mean difference's standard error is the differences' spread / sqrt(blocks).
"""

from __future__ import annotations

import fnmatch
import json
import math
import statistics
from pathlib import Path

from fewstep.errors import FewstepError


def load_eval(path: str | Path) -> dict:
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise FewstepError(f"'{path}' does not exist; write one with "
                           f"`fewstep eval --run R --repeats N --json {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FewstepError(f"'{path}' is not JSON; pass a file written by `fewstep eval --json`") from None
    if not isinstance(result, dict) or "metrics" not in result:
        raise FewstepError(f"'{path}' is not an eval result; pass a file written by `fewstep eval --json`")
    try:
        result["blocks"] = blocks_of(result)
    except FewstepError as e:
        raise FewstepError(f"'{path}': {e}") from None
    return result


def metric_names(metrics: dict) -> list[str]:
    """The metrics of an eval's "metrics" section, without the sample count and the blocks' standard deviations."""
    return [k for k in metrics if k != "n" and not k.endswith("_std")]


def blocks_of(result: dict) -> dict:
    """metric -> per-block values of an eval result; a one-block eval from before evals kept blocks is its means."""
    if "blocks" in result:
        return result["blocks"]
    if result.get("repeats", 1) == 1:
        return {k: [result["metrics"][k]] for k in metric_names(result["metrics"])}
    raise FewstepError("this eval has no per-block values (evals before 2026-12-06 kept only means): score the run "
                       "again with `fewstep eval --run R --repeats N --json FILE`")


def select_metrics(spec: str, result: dict) -> list[str]:
    """Metric names from a comma-separated list of names and patterns ("fid,intra_fid", "fid_class_*"); a pattern
    expands to the result's per-block metrics it matches, in the eval's order."""
    names = []
    for part in (p.strip() for p in spec.split(",")):
        if not any(c in part for c in "*?["):
            hits = [part]  # a plain name: a missing one is reported by paired_difference, with what there is
        else:
            hits = [k for k in result["blocks"] if fnmatch.fnmatchcase(k, part)]
            if not hits:
                raise FewstepError(f"no metric of the base eval matches '{part}'; it keeps {sorted(result['blocks'])}")
        names += [k for k in hits if k not in names]
    return names


def paired_difference(base: dict, other: dict, metric: str = "fid") -> dict:
    """other − base on their common seed blocks: mean, the differences' standard deviation and standard error."""
    for name, res in (("base", base), ("other", other)):
        if metric not in res["blocks"]:
            raise FewstepError(f"the {name} eval keeps blocks of {sorted(res['blocks'])}, not '{metric}'; "
                               f"pick --metric from those")
    if base.get("n") != other.get("n"):
        raise FewstepError(f"the evals scored different sample counts per block (n = {base.get('n')} and "
                           f"{other.get('n')}): blocks pair only at the same --n")
    if base.get("feature_space") != other.get("feature_space"):
        raise FewstepError(f"the evals use different feature spaces ('{base.get('feature_space')}' and "
                           f"'{other.get('feature_space')}'): compare runs of one dataset")
    # block r is seeded by r alone, so blocks of one index are the same noise in every eval
    a, b = (dict(enumerate(res["blocks"][metric], start=res.get("first_block", 0))) for res in (base, other))
    common = sorted(a.keys() & b.keys())
    if not common:
        raise FewstepError(f"the evals share no seed block (blocks {sorted(a)} and {sorted(b)}); score more blocks "
                           "with `fewstep eval --extend FILE --repeats N`")
    k = len(common)
    diffs = [b[i] - a[i] for i in common]
    spread = statistics.stdev(diffs) if k > 1 else None  # one block gives a difference but no error
    return {"metric": metric, "blocks": k, "base": statistics.fmean(a[i] for i in common),
            "other": statistics.fmean(b[i] for i in common), "diff": statistics.fmean(diffs), "diff_std": spread,
            "diff_se": None if spread is None else spread / math.sqrt(k), "diffs": diffs,
            "lower": sum(d < 0 for d in diffs)}  # a sign count: a mean led by one outlying block shows here

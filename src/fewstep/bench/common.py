"""Shared benchmark plumbing: machine description, repeated evaluation, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from fewstep.checkpoint import SHIPPED_TEACHERS, shipped_teacher_names, write_json_atomic
from fewstep.errors import FewstepError
from fewstep.runlog import say


def shipped_teacher(folder: str) -> Path | None:
    """The teacher shipped in fewstep/assets/teachers/<folder>, when this install has it."""
    if folder not in shipped_teacher_names():
        return None
    path = SHIPPED_TEACHERS / folder
    say(f"teacher: the checkpoint shipped with fewstep ({path}; its COMMAND file says how it was made)")
    return path


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def machine_line(m: dict) -> str:
    dev = m["gpu"] or f"{m['cores']}-core CPU ({m['cpu']}), {m['torch_threads']} torch threads"
    return f"{dev}; torch {m['torch']}; measured {m['date']}"


BLOCK_SEEDS = 1_000_000  # seed block r draws seeds r x BLOCK_SEEDS onwards


def repeated_eval(run, n: int | None, repeats: int, evaluator=None, first_block: int = 0, on_block=None,
                  **options) -> dict:
    """evaluate_run over seed blocks first_block .. first_block+repeats-1; metric -> mean (and '<metric>_std' when
    repeats > 1), "blocks" -> metric -> the value of each block.

    Block r draws the same noise for every model, so the blocks allow paired comparisons (`fewstep compare`), whose
    spread is far below the blocks' own, and an eval can later be extended by more blocks (`extend_eval`).
    on_block, if given, receives the result of the blocks scored so far after each block but the last, so an
    interrupted eval of a many-step teacher keeps what it scored.
    """
    from fewstep.metrics.evaluate import evaluate_run

    t0 = time.perf_counter()
    results = []
    for r in range(first_block, first_block + repeats):
        res = evaluate_run(run, n=n, seed_offset=r * BLOCK_SEEDS, evaluator=evaluator, **options)
        results.append(res)
        headline = "fid" if "fid" in res["metrics"] else next(iter(res["metrics"]))  # exact metrics where no FID
        if repeats > 1:  # a block of a many-step teacher can take minutes
            say(f"  block {r}: {headline} {res['metrics'][headline]:.4g}")
        if on_block is not None and len(results) < repeats:
            on_block(_summarise(results, first_block))
    out = _summarise(results, first_block)
    setting = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    say(f"  {run.method_name} ({setting}): {headline} {out['metrics'][headline]:.4g}, "
        f"{repeats} block(s) in {time.perf_counter() - t0:.0f} s")
    return out


def _summarise(results: list[dict], first_block: int) -> dict:
    """One result of consecutive blocks' evaluate_run results: per-block values, their means and spreads."""
    out = {k: v for k, v in results[0].items() if k not in ("metrics", "floor")}
    out["blocks"] = {k: [float(r["metrics"][k]) for r in results] for k in results[0]["metrics"] if k != "n"}
    out["metrics"] = block_means(out["blocks"], results[0]["metrics"]["n"])
    if "floor" in results[0]:  # the real data's own score: the same for every block
        out["floor"] = results[0]["floor"]
    for key in ("samples_per_s", "gen_samples_per_s"):
        out[key] = statistics.fmean(r[key] for r in results)
    out["repeats"], out["first_block"] = len(results), first_block
    return out


def block_means(blocks: dict, n) -> dict:
    """metric -> mean over blocks, and '<metric>_std' (their standard deviation) where there are two or more."""
    agg = {}
    for k, vals in blocks.items():
        agg[k] = statistics.fmean(vals)
        if len(vals) > 1:
            agg[k + "_std"] = statistics.stdev(vals)
    return {**agg, "n": n}


def extend_eval(run, old: dict, repeats: int, evaluator=None, on_block=None, **options) -> dict:
    """`old` (an eval result of `run` with these options) extended to `repeats` seed blocks: the missing blocks are
    scored and every mean recomputed, as if all blocks had been scored at once. on_block: as repeated_eval's, with
    old's blocks included."""
    from fewstep.metrics.paired import blocks_of, metric_names

    blocks = blocks_of(old)
    missing = sorted(k for k in metric_names(old["metrics"]) if k not in blocks)
    if missing:
        raise FewstepError(f"this eval keeps per-block values of {sorted(blocks)} only, not of {', '.join(missing)} "
                           "(written before evals kept every metric's blocks): score it again instead of extending")
    have = len(next(iter(blocks.values())))
    first = old.get("first_block", 0)
    if repeats <= have:
        raise FewstepError(f"the eval already has {have} blocks; ask for more with --repeats (e.g. {have + 4})")

    def merged(new: dict) -> dict:
        both = {k: blocks[k] + new["blocks"][k] for k in blocks}
        total = have + new["repeats"]
        out = {**new, "blocks": both, "metrics": block_means(both, new["metrics"]["n"]), "repeats": total,
               "first_block": first}
        for key in ("samples_per_s", "gen_samples_per_s"):  # weighted by blocks; a missing old speed counts as new
            out[key] = (old.get(key, new[key]) * have + new[key] * new["repeats"]) / total
        return out

    new = repeated_eval(run, old["n"], repeats - have, evaluator=evaluator, first_block=first + have,
                        on_block=None if on_block is None else lambda part: on_block(merged(part)), **options)
    return merged(new)


def comparable_floor(result: dict) -> dict | None:
    """A `repeated_eval` result's real-data floor, or None where the test split holds fewer than the samples scored:
    FID's bias falls with n, so a floor measured at the test split's size is no floor for larger sample sets."""
    return result["floor"] if result["floor"]["n"] >= result["n"] else None


def measure_speed(run, n: int = 500, timings: int = 5, batch_size: int = 500, **options) -> dict:
    """Samples/s of `run`: the median of `timings` timed generations of the same n samples (after a short
    warm-up), for generation alone and with decoding to images (a VQ decoder's cost is the same per image for
    every sampler, so it narrows every ratio to pixels)."""
    from fewstep.metrics.evaluate import balanced_labels, decoder_for, generate

    ds, decoder = decoder_for(run)
    labels, seeds = balanced_labels(ds.num_classes, n), list(range(n))
    warm = min(n, 50)
    generate(run, labels[:warm], seeds[:warm], batch_size, **options)
    gen, dec = [], []
    for _ in range(timings):
        samples, seconds = generate(run, labels, seeds, batch_size, **options)
        gen.append(seconds)
        t0 = time.perf_counter()
        decoder.decode(samples)
        dec.append(time.perf_counter() - t0)
    g, d = statistics.median(gen), statistics.median(dec)
    return {"n": n, "timings": timings, "gen_seconds": g, "decode_seconds": d,
            "gen_samples_per_s": n / g, "samples_per_s": n / (g + d)}


def command_line(fallback: str) -> str:
    """The `fewstep ...` command this process was started with (the fallback when run from Python)."""
    if sys.argv[0].endswith(("fewstep", "fewstep/cli/main.py")):  # the script or `python -m fewstep.cli.main`
        return "fewstep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return fallback


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise FewstepError(f"--steps '{text}' must be comma-separated step counts >= 1, e.g. 1,2,4,8")
    return steps


def slug(label: str) -> str:
    """'DMD2 1-step, GAN, critic ratio 5' -> 'DMD2_1-step_GAN_critic_ratio_5' (a folder name)."""
    return "_".join("".join(c if c.isalnum() or c in "-." else " " for c in label).split())


def fmt(v, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.1f}"
        if 0 < abs(v) < 0.01:  # keep two significant digits of small distances
            return f"{v:.2g}"
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out_dir: Path, name: str, data: dict, markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / f"{name}.json", json.loads(json.dumps(data, default=float)))
    (out_dir / f"{name}.md").write_text(markdown + "\n")

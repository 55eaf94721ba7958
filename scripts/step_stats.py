"""Pixel statistics of a few-step generator's samples after each of its steps, beside its training images'.

    python scripts/step_stats.py RUN [N]

For an image DMD2 run: N class-balanced samples (default 1,000) stopped after step 1, 2, ... of the
generator's sampler, against N training images, in model space [-1, 1]: mean, standard deviation and the share of
near-black (< -0.9) and near-white (> 0.9) pixels. It shows which step moves the distribution where FID alone only
says that it moved (the 4-step fashion_mnist generator in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fewstep.errors import FewstepError  # noqa: E402

EDGE = 0.9


def pixel_stats(x: torch.Tensor) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std()), "black": float((x < -EDGE).float().mean()),
            "white": float((x > EDGE).float().mean())}


def step_stats(run_path: str, n: int) -> list[tuple[str, dict[str, float]]]:
    """Rows (what, statistics): the training images, then the samples after each generator step."""
    from fewstep.data import load_dataset
    from fewstep.methods.edm import continuous_training_data
    from fewstep.metrics.evaluate import balanced_labels
    from fewstep.runs import load_run
    from fewstep.samplers.gaussian import fewstep_sample

    run = load_run(run_path)
    sigmas, gens = run.info.get("gen_sigmas"), [k for k in run.nets if k.startswith("generator")]
    if run.info.get("kind") != "continuous" or not sigmas or len(gens) != 1:
        raise FewstepError(f"'{run_path}' is not an image run with one generator; pass a dmd2 run")
    data_cfg = run.config.get("data", {})
    real = continuous_training_data(load_dataset(data_cfg["name"], data_cfg.get("data_dir")))["x"]
    rows = [(f"training images ({min(n, len(real))})", pixel_stats(real[:n]))]
    labels, seeds, shape = balanced_labels(run.info["num_classes"], n), list(range(n)), tuple(run.info["shape"])
    with torch.no_grad():
        for j in range(1, len(sigmas) + 1):
            x = fewstep_sample(run.nets[gens[0]], labels, seeds, shape, sigmas[:j])
            rows.append((f"after step {j} (from sigma {sigmas[j - 1]:.3g})", pixel_stats(x)))
    return rows


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2) or (len(argv) == 2 and not (argv[1].isdigit() and int(argv[1]) > 0)):
        sys.exit("usage: python scripts/step_stats.py RUN [N]   (N: a whole number of samples >= 1, default 1000)")
    rows = step_stats(argv[0], int(argv[1]) if len(argv) == 2 else 1000)
    print(f"| samples | mean | std | share < -{EDGE} | share > {EDGE} |\n|---|---|---|---|---|")
    for what, s in rows:
        print(f"| {what} | {s['mean']:+.3f} | {s['std']:.3f} | {s['black']:.3f} | {s['white']:.4f} |")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except FewstepError as e:
        sys.exit(f"error: {e}")

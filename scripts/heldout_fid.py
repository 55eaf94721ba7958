"""FID against the held-out test split beside the usual one against the training split, block by block.

    python scripts/heldout_fid.py N REPEATS RUN[@STEPS] [RUN[@STEPS] ...]

`fewstep eval` scores FID against the training images, so a model that reproduces them scores well: on a small
set (1,437 training digits) that rewards memorising them, and the test split (360 digits) does not. Each run draws
the same seed blocks as `fewstep eval --n N --repeats REPEATS` (its train FID is that command's), with STEPS as its
`--steps`. FID against 360 images is biased upwards alike for every model: read the differences, printed against
the first run as their mean over blocks ± its standard error.
"""

from __future__ import annotations

import sys

from fewstep.errors import FewstepError  # importing fewstep sets OMP_WAIT_POLICY before torch loads


def heldout_fids(run_path: str, n: int, repeats: int, steps: int | None = None) -> dict[str, list[float]]:
    """Per seed block: FID of the run's n class-balanced samples against the train and the test split."""
    from fewstep.bench.common import BLOCK_SEEDS
    from fewstep.metrics.distances import frechet_distance
    from fewstep.metrics.evaluate import balanced_labels, decoder_for, generate
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.runs import load_run

    run = load_run(run_path)
    ds, decoder = decoder_for(run)
    if ds.exact is not None:
        raise FewstepError(f"'{run_path}' samples the 2-D toy, which has exact metrics; pass an image run")
    ev = get_evaluator(ds.name, run.config["data"].get("data_dir"))
    labels, opts = balanced_labels(ds.num_classes, n), ({"steps": steps} if steps else {})
    out = {"train": [], "test": []}
    for r in range(repeats):
        samples, _ = generate(run, labels, list(range(r * BLOCK_SEEDS, r * BLOCK_SEEDS + n)), **opts)
        feats, _ = ev.features_and_logits(decoder.decode(samples))
        out["train"].append(frechet_distance(feats, ev.train_features))
        out["test"].append(frechet_distance(feats, ev.test_features))
    return out


def main(argv: list[str]) -> None:
    from fewstep.metrics.paired import paired_difference

    if len(argv) < 3 or not argv[0].isdigit() or not argv[1].isdigit() or int(argv[0]) < 2 or int(argv[1]) < 1:
        sys.exit(__doc__.split("\n\n")[1].strip())
    n, repeats, base = int(argv[0]), int(argv[1]), None
    for spec in argv[2:]:
        path, _, steps = spec.partition("@")
        if steps and not steps.isdigit():
            sys.exit(f"'{spec}': write RUN@STEPS with STEPS a whole number, e.g. runs/teacher@14")
        f = heldout_fids(path, n, repeats, int(steps) if steps else None)
        mean = {k: sum(v) / len(v) for k, v in f.items()}
        line = f"{spec}: FID train {mean['train']:.3f}  test {mean['test']:.3f}"
        if base is None:
            base = f["test"]
        else:  # fewstep compare's pairing, on the test-split blocks
            d = paired_difference({"blocks": {"test": base}}, {"blocks": {"test": f["test"]}}, "test")
            se = float("nan") if d["diff_se"] is None else d["diff_se"]
            line += f"  test - first run: {d['diff']:+.3f} ± {se:.3f} (lower on {d['lower']} of {d['blocks']} blocks)"
        print(line + f"  blocks test {[round(x, 3) for x in f['test']]}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except FewstepError as e:
        sys.exit(f"error: {e}")

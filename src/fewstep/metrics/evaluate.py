"""Evaluate a run: generate per-seed samples with timing, decode, and score them.

Image datasets: FID/KID/PRDC/class accuracy in the evaluator classifier's features, with the
real-vs-real floor (test split vs train split, same n) beside them. The synthetic dataset: exact metrics.
"""

from __future__ import annotations

import time

import torch

from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.runlog import progress
from fewstep.runs import Run
from fewstep.tokenizers import tokenizer_from_spec


def balanced_labels(num_classes: int, n: int) -> torch.Tensor:
    return torch.arange(n) % num_classes


def generate(run: Run, labels: torch.Tensor, seeds: list[int], batch_size: int = 500,
             **options) -> tuple[torch.Tensor, float]:
    """Samples (tokens, images or points) for (labels, seeds) and the wall-clock seconds spent generating them."""
    if len(labels) != len(seeds):
        raise FewstepError(f"{len(labels)} labels but {len(seeds)} seeds")
    device = next(iter(run.nets.values())).parameters().__next__().device
    out, t = [], 0.0
    bar = progress(len(labels), desc=f"sampling {run.method_name}")
    for i in range(0, len(labels), batch_size):
        lab = labels[i:i + batch_size].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        toks = run.generate(lab, seeds[i:i + batch_size], **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t += time.perf_counter() - t0
        out.append(toks.cpu())
        bar.update(len(lab))
    bar.close()
    return torch.cat(out), t


class ContinuousDecoder:
    """Model space [-1, 1] -> images in [0, 1]; 2-D points have no image."""

    def __init__(self, points: bool):
        self.points = points

    def decode(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.points else ((x.float() + 1.0) / 2.0).clamp(0, 1)


def decoder_for(run: Run):
    """(dataset, decoder): decoder.decode(samples) -> images in [0, 1], or None when samples are not images."""
    info = run.info
    ds = load_dataset(info["dataset"], run.config["data"].get("data_dir"))
    if info["kind"] in ("continuous", "points"):
        return ds, ContinuousDecoder(info["kind"] == "points")
    return ds, tokenizer_from_spec(info["tokenizer"], ds)


def evaluate_run(run: Run, n: int | None = None, seed_offset: int = 0, batch_size: int = 500,
                 evaluator=None, **options) -> dict:
    """Metrics of `n` samples (class-balanced labels, seeds seed_offset..seed_offset+n-1)."""
    ds, tok = decoder_for(run)
    n = n or (len(ds.test_labels) if ds.exact is None else 10000)
    labels = balanced_labels(ds.num_classes, n)
    seeds = list(range(seed_offset, seed_offset + n))
    samples, gen_s = generate(run, labels, seeds, batch_size, **options)
    result = {"n": n, "gen_seconds": gen_s, "gen_samples_per_s": n / max(gen_s, 1e-9)}
    if ds.exact is not None:
        result["samples_per_s"] = result["gen_samples_per_s"]
        if ds.train_points is not None:
            from fewstep.data.toy2d import ring_metrics

            result["metrics"] = ring_metrics(ds.exact, samples, labels, ds.test_points)
            result["floor"] = ring_metrics(ds.exact, ds.test_points[:n], ds.test_labels[:n], ds.train_points[:n])
        else:
            from fewstep.metrics.exact import exact_metrics

            result["metrics"] = exact_metrics(ds.exact, samples, labels)
        return result
    t0 = time.perf_counter()
    images = tok.decode(samples)
    dec_s = time.perf_counter() - t0
    result["samples_per_s"] = n / max(gen_s + dec_s, 1e-9)
    if evaluator is None:
        from fewstep.metrics.evaluator import get_evaluator

        evaluator = get_evaluator(ds.name, run.config["data"].get("data_dir"))
    result["metrics"] = evaluator.metrics(images, labels)
    result["floor"] = evaluator.real_floor(n)
    result["evaluator_test_accuracy"] = evaluator.test_accuracy
    result["feature_space"] = f"fewstep classifier trained on {ds.name} (128-d), not Inception"
    return result

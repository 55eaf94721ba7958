"""Weighted sum of the sampling weights of checkpoints that share one architecture, written as an inference export.

    python scripts/blend_weights.py OUT CKPT:W [CKPT:W ...]

The weights W must sum to 1; a negative one extrapolates (BASE:-0.5 END:1.5 goes half as far again past END along the
line from BASE). Config and meta come from the last checkpoint. Used for the weight-space measurements of the digits
DMD2 chain in docs/BENCHMARKS.md; `fewstep eval --run OUT` scores the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from fewstep.checkpoint import (export_inference, read_checkpoint_json, read_tensors, resolve_checkpoint,
                                sampling_weights)
from fewstep.errors import FewstepError


def _parse(arg: str) -> tuple[Path, float]:
    path, _, weight = arg.rpartition(":")
    try:
        return resolve_checkpoint(path), float(weight)
    except ValueError:
        sys.exit(f"'{arg}': the weight after the last ':' is not a number; write CKPT:W, e.g. runs/a:0.5")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any(":" not in a for a in argv[1:]):
        sys.exit("usage: python scripts/blend_weights.py OUT CKPT:W [CKPT:W ...]")
    parts = [_parse(a) for a in argv[1:]]
    total = sum(w for _, w in parts)
    if abs(total - 1.0) > 1e-6:
        sys.exit(f"the weights sum to {total:g}; make them sum to 1")
    last = parts[-1][0]
    blended = {}
    for name in read_checkpoint_json(last)[0].get("trainable", []):
        tensors = [(read_tensors(sampling_weights(ckpt, name)), w) for ckpt, w in parts]
        ref = tensors[-1][0]
        if any(t.keys() != ref.keys() or any(t[k].shape != ref[k].shape for k in ref) for t, _ in tensors):
            sys.exit(f"network '{name}' differs between the checkpoints; blend only runs of one architecture")
        blended[name] = {k: sum(w * t[k].double() for t, w in tensors).to(v.dtype) if v.is_floating_point() else v
                         for k, v in ref.items()}
    out = export_inference(last, argv[0])
    for name, tensors in blended.items():
        save_file(tensors, out / f"{name}_ema.safetensors")
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except FewstepError as e:
        sys.exit(f"error: {e}")

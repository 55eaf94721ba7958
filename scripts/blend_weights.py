"""Weighted sum of the sampling weights of checkpoints that share one architecture, written as an inference export.

    python scripts/blend_weights.py OUT CKPT:W [CKPT:W ...]

The weights W must sum to 1; a negative one extrapolates (BASE:-0.5 END:1.5 goes half as far again past END along the
line from BASE). Config and meta come from the last checkpoint. Used for the weight-space measurements of the digits
DMD2 chain in docs/BENCHMARKS.md; `fewstep eval --run OUT` scores the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from fewstep.checkpoint import export_inference, resolve_checkpoint, sampling_weights
from fewstep.errors import FewstepError


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any(":" not in a for a in argv[1:]):
        sys.exit("usage: python scripts/blend_weights.py OUT CKPT:W [CKPT:W ...]")
    out = Path(argv[0])
    parts = [(resolve_checkpoint(a.rsplit(":", 1)[0]), float(a.rsplit(":", 1)[1])) for a in argv[1:]]
    if abs(sum(w for _, w in parts) - 1.0) > 1e-6:
        sys.exit(f"the weights sum to {sum(w for _, w in parts)}; make them sum to 1")
    export_inference(parts[-1][0], out)
    for f in sorted(out.glob("*_ema.safetensors")):
        name = f.name.removesuffix("_ema.safetensors")
        tensors = [(load_file(sampling_weights(ckpt, name)), w) for ckpt, w in parts]
        keys = tensors[-1][0].keys()
        if any(t.keys() != keys or any(t[k].shape != tensors[-1][0][k].shape for k in keys) for t, _ in tensors):
            sys.exit(f"network '{name}' differs between the checkpoints; blend only runs of one architecture")
        blended = {k: sum(w * t[k].double() for t, w in tensors).to(tensors[-1][0][k].dtype)
                   if tensors[-1][0][k].is_floating_point() else tensors[-1][0][k] for k in keys}
        save_file(blended, f)
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except FewstepError as e:
        sys.exit(f"error: {e}")

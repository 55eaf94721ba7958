"""A new run folder holding one checkpoint of another run with some of its settings changed, optimizer state kept.

    python scripts/branch_run.py CKPT OUT KEY=VALUE [KEY=VALUE ...]

KEY is method.<field>, train.<field> or info.<field> of the checkpoint's config.json (for method, also an option the
method gained since); VALUE is JSON (true, 0.5, [80,17.5]) or a bare word. `fewstep distill <method> --out OUT` with
the changed settings resumes the branch (give a train.steps past the checkpoint's step). train.lr also rewrites the
saved optimizers' learning rates, which resume restores. Unlike method.init_from, Adam's moments, the EMA, the data
order and the RNG carry on, so each setting is measured from the very state of the run it branches from (the 4-step
DMD2 measurements in docs/BENCHMARKS.md).
info.gen_sigmas=[...] with the first N levels of a few-step generator samples only its first N steps.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

from fewstep.checkpoint import point_latest, read_checkpoint_json, resolve_checkpoint, write_json_atomic
from fewstep.errors import FewstepError
from fewstep.methods import get_method

SECTIONS = ("method", "train", "info")


def _parse(arg: str, config: dict) -> tuple[str, str, object]:
    key, eq, raw = arg.partition("=")
    section, _, field = key.partition(".")
    if not eq or section not in SECTIONS or not field:
        sys.exit(f"'{arg}': write KEY=VALUE with KEY one of {', '.join(s + '.<field>' for s in SECTIONS)}")
    fields = set(config.get(section, {}))
    if section == "method" and "name" in config.get("method", {}):  # options added since the checkpoint was written
        fields |= {f.name for f in dataclasses.fields(get_method(config["method"]["name"]).Config)}
    if field not in fields:
        sys.exit(f"'{key}' is not in the checkpoint's config; its {section} fields: {', '.join(sorted(fields)) or 'none'}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, field, value


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit("usage: python scripts/branch_run.py CKPT OUT KEY=VALUE [KEY=VALUE ...]")
    src, out = resolve_checkpoint(argv[0]), Path(argv[1])
    if out.exists():
        sys.exit(f"'{out}' exists; pick a new folder")
    config, meta = read_checkpoint_json(src)
    old_lr = config["train"]["lr"]
    for section, field, value in (_parse(a, config) for a in argv[2:]):
        config[section][field] = value
        if (section, field) == ("train", "lr"):  # the optimizers at train.lr; one with its own LR keeps it
            for group in (g for opt in meta["optimizers"].values() for g in opt["param_groups"]):
                if group["base_lr"] == old_lr:
                    group["base_lr"] = group["lr"] = float(value)
    dest = out / "checkpoints" / src.name
    shutil.copytree(src, dest)
    write_json_atomic(dest / "config.json", config)
    write_json_atomic(dest / "meta.json", meta)
    point_latest(out / "checkpoints", src.name)
    print(f"wrote {dest}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except FewstepError as e:
        sys.exit(f"error: {e}")

"""Checkpoints: one folder per step, safetensors for every tensor, JSON for everything else.

Layout of <run>/checkpoints/step_00001000/:
  config.json                 resolved experiment config + network architectures + method info
  meta.json                   step, data cursor, EMA counters, optimizer hyper-parameters, RNG (python/numpy)
  <net>.safetensors           weights of each network the method declared trainable
  <net>_ema.safetensors       EMA weights
  <net>_optim.safetensors     optimizer state tensors
  rng.safetensors             torch RNG states
A folder is written under a temporary name and renamed when complete; then the `latest` pointer is
replaced atomically. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fewstep.errors import FewstepError

LATEST = "latest"
SHIPPED_TEACHERS = Path(__file__).resolve().parent / "assets" / "teachers"


def shipped_teacher_names() -> list[str]:
    """Teachers shipped in fewstep/assets/teachers, which --teacher/--run take by name from any install."""
    return sorted(p.name for p in SHIPPED_TEACHERS.iterdir() if (p / "config.json").is_file())


def step_dirname(step: int) -> str:
    return f"step_{step:08d}"


def _replace_atomically(path: Path, write) -> None:
    """write(tmp) fills a temporary file beside `path`, which then replaces `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name)
    os.close(fd)
    write(tmp)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are ordinary readable files
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    _replace_atomically(path, write)


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file that readers see whole or not at all."""
    _replace_atomically(path, lambda tmp: save_file(_contiguous(tensors), tmp))


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_weights(module: torch.nn.Module, path: Path) -> None:
    save_file(_contiguous(module.state_dict()), str(path))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file; a missing or damaged one is a one-line error, not a Rust traceback."""
    path = Path(path)
    if not path.is_file():
        raise FewstepError(f"'{path}' is missing; the checkpoint is incomplete, pick another step")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise FewstepError(f"'{path}' is damaged ({str(e).strip().splitlines()[0]}); pick another step") from None


def load_weights(module: torch.nn.Module, path: Path) -> None:
    sd = read_tensors(path)
    try:
        module.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FewstepError(f"weights in '{path}' do not fit the network its config describes ({first})") from None


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return _contiguous(tensors), {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    root: Path,
    step: int,
    *,
    config: dict,
    nets: dict[str, torch.nn.Module],
    emas: dict[str, torch.nn.Module],
    optims: dict[str, torch.optim.Optimizer],
    meta: dict,
    rng_rank_states: list[tuple[dict[str, torch.Tensor], dict]] | None = None,
    keep: int = 0,
) -> Path:
    """Write a complete checkpoint folder atomically, move `latest`, then prune old ones (keep<=0: keep all)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dirname(step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    try:
        for name, m in nets.items():
            save_weights(m, tmp / f"{name}.safetensors")
        for name, m in emas.items():
            save_weights(m, tmp / f"{name}_ema.safetensors")
        optim_meta = {}
        for name, opt in optims.items():
            tensors, om = optimizer_to_files(opt)
            save_file(tensors, str(tmp / f"{name}_optim.safetensors"))
            optim_meta[name] = om
        rng_meta = []
        for rank, (tensors, rm) in enumerate(rng_rank_states or [rng_state()]):
            save_file(_contiguous(tensors), str(tmp / f"rng_rank{rank}.safetensors"))
            rng_meta.append(rm)
        write_json_atomic(tmp / "config.json", config)
        write_json_atomic(tmp / "meta.json", {**meta, "step": step, "optimizers": optim_meta, "rng": rng_meta})
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_latest(root, final.name)
    if keep > 0:
        for old in saved_checkpoints(root)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def point_latest(root: Path, step_dir: str) -> None:
    """Move the `latest` pointer of checkpoints folder `root` to its step folder `step_dir`, in one rename."""
    pointer_tmp = Path(root) / f".{LATEST}.tmp"
    pointer_tmp.write_text(step_dir + "\n")
    os.replace(pointer_tmp, Path(root) / LATEST)


def saved_checkpoints(root: Path) -> list[Path]:
    """The step folders of a checkpoints folder, oldest first."""
    return sorted(p for p in Path(root).glob("step_*") if p.is_dir())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint folder `latest` points to, for a run folder or a checkpoints folder."""
    run_dir = Path(run_dir)
    for root in (run_dir / "checkpoints", run_dir):
        pointer = root / LATEST
        if pointer.is_file():
            target = root / pointer.read_text().strip()
            if target.is_dir():
                return target
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder, a checkpoints folder, a step folder or a shipped teacher's name; return the step folder."""
    p = Path(path)
    if not p.exists() and str(path) in shipped_teacher_names():
        p = SHIPPED_TEACHERS / str(path)
    if not p.exists():
        raise FewstepError(f"'{p}' does not exist; pass a run folder (e.g. runs/teacher_digits), a checkpoint or the "
                           f"name of a shipped teacher ({', '.join(shipped_teacher_names())})")
    if (p / "config.json").is_file() and (p / "meta.json").is_file():
        return p
    found = latest_checkpoint(p)
    if found is None:
        raise FewstepError(f"'{p}' holds no checkpoint (no 'checkpoints/latest'); train it first or pass a step folder")
    return found


def read_checkpoint_json(ckpt: Path) -> tuple[dict, dict]:
    try:
        config = json.loads((ckpt / "config.json").read_text())
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FewstepError(f"checkpoint '{ckpt}' is unreadable ({e.__class__.__name__}); pick another step") from None
    return config, meta


def sampling_weights(ckpt: Path, name: str) -> Path:
    """The weights file samples of network `name` come from: its EMA where the run kept one, else the live weights."""
    ema = ckpt / f"{name}_ema.safetensors"
    return ema if ema.is_file() else ckpt / f"{name}.safetensors"


def export_inference(run: str | Path, out: str | Path) -> Path:
    """Copy what sampling needs (config, meta without optimizer/RNG state, EMA or live weights) to `out`."""
    src = resolve_checkpoint(run)
    config, meta = read_checkpoint_json(src)
    return write_inference(out, config, meta, {name: sampling_weights(src, name) for name in config.get("trainable", [])})


def write_inference(out: str | Path, config: dict, meta: dict, weights: dict[str, Path]) -> Path:
    """An inference checkpoint in `out`: each network's weights file copied as its EMA, the config, and the meta
    less its optimizer and RNG state."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FewstepError(f"'{out}' exists and is not empty; pick a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name, path in weights.items():
        shutil.copyfile(path, out / f"{name}_ema.safetensors")
    write_json_atomic(out / "config.json", config)
    write_json_atomic(out / "meta.json", {k: v for k, v in meta.items() if k not in ("optimizers", "rng")})
    return out

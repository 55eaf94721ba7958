import os
import sys
from pathlib import Path

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before torch is imported
os.environ["FEWSTEP_PROGRESS"] = "0"
os.environ["FEWSTEP_QUIET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

if not os.environ.get("FEWSTEP_THREADS"):  # fewstep/__init__ applies FEWSTEP_THREADS when set
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["FEWSTEP_CACHE"] = str(tmp_path_factory.mktemp("fewstep_cache"))
    yield


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory):
    """A tiny MaskGIT teacher on digits (a few steps: the plumbing, not the quality)."""
    from helpers import train_tiny_teacher

    return train_tiny_teacher(tmp_path_factory.mktemp("teacher") / "run", "digits")


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory):
    from helpers import write_fake_fashion

    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))

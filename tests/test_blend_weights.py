"""scripts/blend_weights.py: a weighted sum of checkpoints' sampling weights that still loads as a run."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fewstep.checkpoint import resolve_checkpoint, sampling_weights
from fewstep.runs import load_run

from helpers import load_script


def _blend():
    return load_script("blend_weights").main


def test_blend_is_the_weighted_sum_and_loads(tmp_path, digits_teacher):
    a = resolve_checkpoint(digits_teacher)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    name = next(p.name for p in a.glob("*_ema.safetensors")).removesuffix("_ema.safetensors")
    wa = load_file(sampling_weights(a, name))
    save_file({k: 2 * v if v.is_floating_point() else v for k, v in wa.items()}, sampling_weights(b, name))

    _blend()([str(tmp_path / "mean"), f"{a}:0.5", f"{b}:0.5"])
    _blend()([str(tmp_path / "past"), f"{a}:-1", f"{b}:2"])
    mean = load_file(tmp_path / "mean" / f"{name}_ema.safetensors")
    past = load_file(tmp_path / "past" / f"{name}_ema.safetensors")
    k = next(k for k, v in wa.items() if v.is_floating_point() and v.abs().sum() > 0)
    torch.testing.assert_close(mean[k], 1.5 * wa[k])
    torch.testing.assert_close(past[k], 3 * wa[k])
    load_run(tmp_path / "mean")  # an inference export, usable by sample/eval


def test_blend_refuses_weights_that_do_not_sum_to_one(tmp_path, digits_teacher):
    with pytest.raises(SystemExit, match="sum to 0.9;"):
        _blend()([str(tmp_path / "x"), f"{digits_teacher}:0.4", f"{digits_teacher}:0.5"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="not a number"):
        _blend()([str(tmp_path / "x"), f"{digits_teacher}:half", f"{digits_teacher}:0.5"])

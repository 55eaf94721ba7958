"""The teachers shipped in the package load and do their job (a mis-exported or misloaded file would not)."""

from pathlib import Path

import torch

import fewstep
from fewstep.data import load_dataset
from fewstep.methods.edm import require_edm_teacher

ASSETS = Path(fewstep.__file__).resolve().parent / "assets" / "teachers"


def test_shipped_edm_teacher_denoises_held_out_digits():
    run = require_edm_teacher(str(ASSETS / "edm_digits"))
    ds = load_dataset("digits")
    x = ds.test_images[:64] * 2.0 - 1.0
    y = ds.test_labels[:64]
    sigma = torch.full((len(x),), 0.5)
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = run.nets["model"](noisy, sigma, y)
    noisy_mse, denoised_mse = ((noisy - x) ** 2).mean().item(), ((d - x) ** 2).mean().item()
    # noise variance 0.25: the shipped teacher leaves 0.041 of it on digits it never saw, the same UNet
    # untrained (D ~ c_skip * input) 0.246
    assert denoised_mse < 0.25 * noisy_mse, (denoised_mse, noisy_mse)


def test_benches_default_to_the_shipped_digits_teachers(tmp_path):
    from fewstep.bench.dmd2 import ensure_edm_teacher
    from fewstep.bench.teacher import ensure_teacher

    assert ensure_edm_teacher("digits", None, tmp_path, None) == str(ASSETS / "edm_digits")
    assert ensure_teacher("digits", None, tmp_path, None, None) == str(ASSETS / "digits")
    assert ensure_edm_teacher("digits", None, tmp_path, "runs/mine") == "runs/mine"
    assert not any(tmp_path.iterdir())  # nothing trained

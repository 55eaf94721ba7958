"""The teachers shipped in the package load and do their job (a mis-exported or misloaded file would not)."""

from pathlib import Path

import pytest
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


def test_shipped_fashion_teacher_denoises_its_own_samples():
    """CI has no Fashion-MNIST, so the check runs on the teacher's own 18-step samples: a trained denoiser
    recovers points of its learned distribution from noise; a misloaded or untrained one does not."""
    from fewstep.samplers.gaussian import edm_sample

    run = require_edm_teacher(str(ASSETS / "edm_fashion_mnist"))
    assert run.info["dataset"] == "fashion_mnist" and tuple(run.info["shape"]) == (1, 28, 28)
    net = run.nets["model"]
    y = torch.arange(16) % 10
    with torch.no_grad():
        x = edm_sample(net, y, list(range(16)), (1, 28, 28), steps=18, solver="heun", cfg_scale=1.0,
                       null_class=run.info["null_class"])
        noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        d = net(noisy, torch.full((16,), 0.5), y)
    noisy_mse, denoised_mse = ((noisy - x) ** 2).mean().item(), ((d - x) ** 2).mean().item()
    # noise variance 0.25: the shipped teacher leaves 0.018 of it on its own samples, the same UNet untrained 0.123
    assert denoised_mse < 0.25 * noisy_mse, (denoised_mse, noisy_mse)


def test_benches_default_to_the_shipped_teachers(tmp_path):
    from fewstep.bench.dmd2 import ensure_edm_teacher
    from fewstep.bench.teacher import ensure_teacher

    assert ensure_edm_teacher("digits", None, tmp_path, None) == str(ASSETS / "edm_digits")
    assert ensure_edm_teacher("fashion_mnist", None, tmp_path, None) == str(ASSETS / "edm_fashion_mnist")
    assert ensure_teacher("digits", None, tmp_path, None, None) == str(ASSETS / "digits")
    assert ensure_edm_teacher("digits", None, tmp_path, "runs/mine") == "runs/mine"
    assert not any(tmp_path.iterdir())  # nothing trained


def test_a_shipped_teacher_is_taken_by_name_and_a_wrong_name_lists_them(tmp_path, monkeypatch):
    from fewstep.checkpoint import resolve_checkpoint
    from fewstep.errors import FewstepError

    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert resolve_checkpoint("edm_digits") == ASSETS / "edm_digits"
    with pytest.raises(FewstepError, match="shipped teacher .*edm_digits, edm_fashion_mnist"):
        resolve_checkpoint("edm_digit")
    (tmp_path / "edm_digits").mkdir()  # a local folder of that name wins over the shipped one
    with pytest.raises(FewstepError, match="holds no checkpoint"):
        resolve_checkpoint("edm_digits")

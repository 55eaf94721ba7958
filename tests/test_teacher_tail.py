"""scripts/teacher_tail.py: a few-step generator whose last steps are the teacher's ODE from their input level."""

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.metrics.evaluate import balanced_labels
from fewstep.samplers.gaussian import edm_sample, fewstep_sample
from fewstep.samplers.noise import SeedStream

from helpers import load_script, train_tiny_edm


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from fewstep.cli.commands import train_run

    tmp = tmp_path_factory.mktemp("tail")
    teacher = str(train_tiny_edm(tmp / "edm"))
    run = train_run("dmd2", {"name": "digits"}, str(tmp / "dmd2"), extra_method={"teacher": teacher},
                    overrides=["train.steps=1", "train.batch_size=8", "method.critic_updates=1", "method.gen_steps=3"])
    return teacher, str(run)


def test_the_tail_is_the_teachers_heun_sampler_from_that_level(runs):
    from fewstep.runs import load_run

    teacher_path, run_path = runs
    s = load_script("teacher_tail")
    sigmas = load_run(run_path).info["gen_sigmas"]  # 80, 17.5, 2.5 for three steps
    hybrid = s.with_teacher_tail(run_path, sigmas[1] * 1.01, 4)
    teacher = load_run(teacher_path).nets["model"].eval()
    labels, seeds, shape = balanced_labels(10, 20), list(range(20)), tuple(load_run(run_path).info["shape"])

    # below the threshold: exactly edm_sample started at that level from the same noise
    x = SeedStream(seeds, "cpu").randn(*shape) * sigmas[1]
    tail = hybrid.nets["generator"](x, torch.full((20,), sigmas[1]), labels)
    ref = edm_sample(teacher, labels, seeds, shape, steps=4, sigma_max=sigmas[1])
    assert torch.allclose(tail, ref, atol=1e-5)
    # M = 1: the teacher's one-shot denoiser
    one = s.with_teacher_tail(run_path, sigmas[1] * 1.01, 1).nets["generator"](x, torch.full((20,), sigmas[1]), labels)
    assert torch.allclose(one, teacher(x, torch.full((20,), sigmas[1]), labels), atol=1e-5)

    # above it: the generator as trained, so the hybrid's first step is the run's first step
    gen = load_run(run_path).nets["generator"]
    first = fewstep_sample(hybrid.nets["generator"], labels, seeds, shape, sigmas[:1])
    assert torch.equal(first, fewstep_sample(gen, labels, seeds, shape, sigmas[:1]))
    assert not torch.allclose(fewstep_sample(hybrid.nets["generator"], labels, seeds, shape, sigmas),
                              fewstep_sample(gen, labels, seeds, shape, sigmas), atol=1e-3)


def test_a_threshold_outside_the_runs_levels_or_a_one_step_run_is_refused(runs):
    teacher_path, run_path = runs
    s = load_script("teacher_tail")
    with pytest.raises(FewstepError, match="leaves no step to the teacher or none to the generator"):
        s.with_teacher_tail(run_path, 100.0, 2)
    with pytest.raises(FewstepError, match="not a few-step dmd2 run"):
        s.with_teacher_tail(teacher_path, 1.0, 2)
    with pytest.raises(SystemExit, match="usage"):
        s.main([run_path, "1.0", "0", "out.json"])

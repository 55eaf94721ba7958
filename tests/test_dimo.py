import json

import pytest
import torch

from fewstep.experiment import build_experiment
from fewstep.methods.base import StepContext
from fewstep.methods.common.distribution_matching import divergence_logit_grad
from fewstep.samplers.masked import guided_logits

from helpers import train_tiny_teacher


@pytest.fixture(scope="module")
def dimo_parts(tmp_path_factory):
    teacher = train_tiny_teacher(tmp_path_factory.mktemp("dimo_t") / "t", steps=5)
    exp = build_experiment("dimo", {"name": "digits"}, None, [f"method.teacher={teacher}", "method.beta=0.3",
                                                              "method.teacher_cfg=1.7"])
    nets = {k: v.module for k, v in exp.method.build().items()}
    for m in nets.values():
        m.eval()
    nets["generator"].requires_grad_(True)  # the trainer does this for the phase that trains it
    return exp.method, nets


@pytest.mark.parametrize("normalization,ramp", [("sum", "constant"), ("mean", "constant"), ("sum", "linear")])
def test_generator_gradient_is_g_at_masked_positions_and_zero_elsewhere(dimo_parts, monkeypatch, normalization, ramp):
    import fewstep.methods.dimo as dimo_mod

    method, nets = dimo_parts
    method.cfg.normalization, method.cfg.teacher_cfg_ramp = normalization, ramp
    seen = {}
    real_mask = dimo_mod.forward_mask

    def recording_mask(x, schedule, mask_id, t):
        x_t, mask = real_mask(x, schedule, mask_id, t=t)
        seen["x_t"], seen["mask"], seen["t"] = x_t, mask, t
        return x_t, mask

    real_net = nets["generator"]

    def recording_generator(*a, **k):
        z = real_net(*a, **k)
        z.retain_grad()
        seen["z"] = z
        return z

    monkeypatch.setattr(dimo_mod, "forward_mask", recording_mask)
    wrapped = dict(nets, generator=recording_generator)
    ctx = StepContext(step=0, phase=method.phases()[0], batch_size=6, device=torch.device("cpu"),
                      wrapped=wrapped, raw=wrapped, next_batch=lambda: {})
    torch.manual_seed(0)
    out = method.generator_step(ctx)
    out.loss.backward()
    z, x_t, mask = seen["z"], seen["x_t"], seen["mask"]
    # recompute g independently from the teacher (with CFG) and the aux model at the same x_t
    torch.manual_seed(0)
    y = torch.randint(0, 10, (6,))  # first draw of the generator step
    # linear: each sample guided as the teacher's sampler guides at its progress t (1 at all-[M], 1.7 at the end)
    cfg = [1.7] * 6 if ramp == "constant" else [1.0 + 0.7 * float(t) for t in seen["t"]]
    with torch.no_grad():
        zt = torch.cat([guided_logits(nets["teacher"], x_t[i:i + 1], y[i:i + 1], cfg[i], 10) for i in range(6)])
        za = nets["aux"](x_t, y)
        g = divergence_logit_grad(zt, za, "jeffrey", beta=0.3)
    scale = 1 / 6 if normalization == "sum" else (1 / (6 * mask.sum(1).float()))[:, None, None]
    expected = g * mask[..., None] * scale
    assert torch.allclose(z.grad, expected, atol=1e-7)
    assert (z.grad[~mask] == 0).all() and z.grad[mask].abs().sum() > 0


def test_generator_trains_without_dropout_while_teacher_and_aux_keep_theirs(dimo_parts):
    _, nets = dimo_parts
    rates = {k: {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)} for k, net in nets.items()}
    assert rates["generator"] == {0.0}
    assert rates["teacher"] == rates["aux"] and rates["teacher"] != {0.0}
    assert nets["generator"].cfg.dropout == 0.0  # the saved config says what was trained


def test_config_errors():
    from fewstep.errors import FewstepError

    with pytest.raises(FewstepError, match="unknown divergence 'klf'"):
        build_experiment("dimo", {"name": "digits"}, None, ["method.divergence=klf"])
    with pytest.raises(FewstepError, match="normalization must be"):
        build_experiment("dimo", {"name": "digits"}, None, ["method.normalization=avg"])
    exp = build_experiment("dimo", {"name": "digits"}, None, [])
    with pytest.raises(FewstepError, match="DiMO needs a teacher"):
        exp.method.build()


def test_distillation_moves_the_one_step_student_toward_the_exact_distribution(tmp_path):
    """On synthetic_small (exact probabilities) the teacher is trained for real, then distilled: the one-step
    student's exact pair KL and NLL gap must fall well below those of its starting point (a teacher copy)."""
    from fewstep.cli.commands import train_run
    from fewstep.metrics.evaluate import evaluate_run
    from fewstep.runs import load_run

    teacher = train_run("maskgit", {"name": "synthetic_small"}, str(tmp_path / "t"))
    t_run = load_run(teacher)
    t8 = evaluate_run(t_run, n=4000, steps=8, remask="random", schedule="linear")["metrics"]
    assert t8["pair_kl"] < 0.05  # the teacher itself is close to the exact distribution
    student = load_run(train_run("dimo", {"name": "synthetic_small"}, str(tmp_path / "d"),
                                 extra_method={"teacher": str(teacher)}), prefer_ema=False)
    after = evaluate_run(student, n=4000)["metrics"]
    student.nets["generator"].load_state_dict(t_run.nets["model"].state_dict())
    before = evaluate_run(student, n=4000)["metrics"]
    assert after["pair_kl"] < 0.6 * before["pair_kl"]
    assert after["nll_gap"] < 0.5 * before["nll_gap"]


def test_finetune_stage_starts_generator_and_aux_from_the_first_run(tmp_path):
    from fewstep.cli.commands import train_run
    from fewstep.errors import FewstepError
    from fewstep.runs import load_run

    teacher = train_tiny_teacher(tmp_path / "t", steps=3)
    final = train_run("dimo", {"name": "digits"}, str(tmp_path / "d"),
                      overrides=["train.steps=2", "train.batch_size=8", "train.ema_decay=0.5", "finetune.train.steps=1",
                                 "finetune.train.lr=1e-4", "finetune.train.lr_schedule=constant",
                                 "finetune.method.teacher_cfg=1.5"], extra_method={"teacher": str(teacher)})
    first = tmp_path / "d" / "base"
    base_cfg, final_cfg = (json.loads((d / "config.json").read_text()) for d in (first, final))
    assert base_cfg["finetune"]["method"]["teacher_cfg"] == 1.5 and base_cfg["train"]["steps"] == 2
    assert final_cfg["method"]["init_from"] == str(first) and final_cfg["method"]["teacher_cfg"] == 1.5
    assert final_cfg["train"]["steps"] == 1 and "finetune" not in final_cfg
    src = load_run(first)  # EMA generator, raw aux
    exp = build_experiment("dimo", {"name": "digits"}, None, [f"method.teacher={teacher}", f"method.init_from={first}"])
    nets = exp.method.build()
    t_model = load_run(teacher).nets["model"]
    for name in ("generator", "aux"):
        got, want = nets[name].module.state_dict(), src.nets[name].state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert any(not torch.equal(want[k], v) for k, v in t_model.state_dict().items())  # it did move off the teacher
    # resuming the second run needs only its own checkpoint, not the run it started from
    first.rename(tmp_path / "gone")
    train_run("dimo", {"name": "digits"}, str(tmp_path / "d"), overrides=[
        "train.steps=2", "train.batch_size=8", "train.ema_decay=0.5", "train.lr=1e-4", "train.lr_schedule=constant",
        f"method.init_from={first}", "method.teacher_cfg=1.5", "finetune.train.steps=0"], extra_method={"teacher": str(teacher)})
    assert json.loads((final / "checkpoints" / "step_00000002" / "meta.json").read_text())["step"] == 2
    with pytest.raises(FewstepError, match="changes only method"):
        build_experiment("dimo", {"name": "digits"}, None, [f"method.teacher={teacher}", "finetune.data.name=mnist"])
    with pytest.raises(FewstepError, match="'maskgit' cannot start from an earlier run"):
        build_experiment("maskgit", {"name": "digits"}, None, ["finetune.train.steps=5"])
    bad = build_experiment("dimo", {"name": "digits"}, None, [f"method.teacher={teacher}", f"method.init_from={teacher}"])
    with pytest.raises(FewstepError, match="holds a maskgit run; pass a dimo run"):
        bad.method.build()

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from fewstep import checkpoint as ckpt_io
from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepOut
from fewstep.trainer import Trainer, TrainConfig

from helpers import TINY_TEACHER, train_tiny_teacher

TINY = [o for o in TINY_TEACHER if not o.startswith("train.steps")]


def _losses(run_dir):
    return {r["step"]: r["denoise/loss"] for r in map(json.loads, (run_dir / "stats.jsonl").read_text().splitlines())}


def test_resume_after_a_crash_gives_the_same_next_step_losses_bit_for_bit(tmp_path):
    from fewstep.hooks import eval_hook

    """Dropout, label dropout and a cosine LR schedule are on, so RNG state, data cursor, optimizer, EMA and
    the step all have to come back exactly."""
    from fewstep.experiment import build_experiment

    over = TINY + ["train.steps=6", "train.ckpt_every=3", "method.dropout=0.1", "train.lr_schedule=cosine"]

    def crash_at_3(state):
        if state.step == 3:
            raise RuntimeError("simulated crash")

    exp = build_experiment("maskgit", {"name": "digits"}, None, over)
    Trainer(exp.method, exp.train, tmp_path / "a", exp.record, show_progress=False).fit()
    exp = build_experiment("maskgit", {"name": "digits"}, None, over)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(exp.method, exp.train, tmp_path / "b", exp.record, hooks=[(1, crash_at_3)], show_progress=False).fit()
    exp = build_experiment("maskgit", {"name": "digits"}, None, over)
    exp.method.full_config = exp.record
    # only this leg evaluates during training: hooks must not touch the training RNG or network modes
    hooks = [(1, eval_hook(n=20, steps=2))]
    Trainer(exp.method, exp.train, tmp_path / "b", exp.record, hooks=hooks, show_progress=False).fit()
    assert len((tmp_path / "b" / "eval.jsonl").read_text().splitlines()) == 3
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [a[s] for s in (4, 5, 6)] == [b[s] for s in (4, 5, 6)]
    for f in ("model.safetensors", "model_ema.safetensors", "model_optim.safetensors"):
        pa, pb = ckpt_io.latest_checkpoint(tmp_path / "a"), ckpt_io.latest_checkpoint(tmp_path / "b")
        assert (pa / f).read_bytes() == (pb / f).read_bytes()


def test_extending_a_finished_run_continues_it_exactly(tmp_path):
    extra = ["method.dropout=0.1", "train.ckpt_every=3", "train.lr_schedule=constant"]
    straight = train_tiny_teacher(tmp_path / "a", steps=6, extra=extra)
    part = train_tiny_teacher(tmp_path / "b", steps=3, extra=extra)
    resumed = train_tiny_teacher(part, steps=6, extra=extra)
    a, b = _losses(straight), _losses(resumed)
    assert [a[s] for s in (4, 5, 6)] == [b[s] for s in (4, 5, 6)]
    sa = ckpt_io.latest_checkpoint(straight)
    sb = ckpt_io.latest_checkpoint(resumed)
    for f in ("model.safetensors", "model_ema.safetensors"):
        assert (sa / f).read_bytes() == (sb / f).read_bytes()


def test_resume_refuses_a_different_config(tmp_path):
    run = train_tiny_teacher(tmp_path / "r", steps=2)
    with pytest.raises(FewstepError, match="different method config"):
        train_tiny_teacher(run, steps=4, extra=["method.dim=48"])


def test_resume_may_change_precision_and_device_but_not_the_recipe(tmp_path, capsys, monkeypatch):
    """A GPU run can go on on a CPU in the precision that is fast there: the state is fp32 either way."""
    straight = _losses(train_tiny_teacher(tmp_path / "a", steps=3))
    run = train_tiny_teacher(tmp_path / "b", steps=2)
    monkeypatch.setenv("FEWSTEP_QUIET", "0")
    train_tiny_teacher(run, steps=3, extra=["train.precision=bf16", "train.device=cpu"])
    assert "train.precision changed from fp32 to bf16 at step 2" in capsys.readouterr().err
    latest = ckpt_io.latest_checkpoint(run)
    assert latest.name == "step_00000003"
    assert json.loads((latest / "config.json").read_text())["train"]["precision"] == "bf16"
    resumed = _losses(run)
    assert resumed[2] == straight[2]  # the fp32 leg is the same run
    assert resumed[3] != straight[3] and resumed[3] == pytest.approx(straight[3], rel=2e-2)  # bf16 rounding only
    with pytest.raises(FewstepError, match=r"different train settings \(lr\)"):
        train_tiny_teacher(run, steps=4, extra=["train.precision=bf16", "train.lr=1e-3"])


def test_resume_accepts_a_run_saved_before_a_config_key_existed(tmp_path):
    """A key added to fewstep after a run was saved is compatible when it holds its default (how the run ran)."""
    run = train_tiny_teacher(tmp_path / "r", steps=2)

    def drop_key(key):
        cfg_file = ckpt_io.latest_checkpoint(run) / "config.json"
        cfg = json.loads(cfg_file.read_text())
        del cfg["method"][key]
        cfg_file.write_text(json.dumps(cfg))

    drop_key("sample_gumbel_temp")
    train_tiny_teacher(run, steps=3)
    assert ckpt_io.latest_checkpoint(run).name == "step_00000003"
    drop_key("sample_gumbel_temp")
    with pytest.raises(FewstepError, match=r"different method config \(sample_gumbel_temp: 4.5 there, 2.0 now\)"):
        train_tiny_teacher(run, steps=4, extra=["method.sample_gumbel_temp=2.0"])


@pytest.mark.parametrize("damaged", ["model_optim.safetensors", "model_ema.safetensors"])
def test_a_damaged_checkpoint_file_is_a_one_line_error(tmp_path, damaged):
    from fewstep.runs import load_run

    run = train_tiny_teacher(tmp_path / "r", steps=2)
    f = ckpt_io.latest_checkpoint(run) / damaged
    f.write_bytes(f.read_bytes()[:100])  # a copy cut short
    with pytest.raises(FewstepError, match=f"{damaged}' is damaged .*; pick another step"):
        train_tiny_teacher(run, steps=3)  # resume reads every file
    if damaged == "model_ema.safetensors":
        with pytest.raises(FewstepError, match="is damaged"):
            load_run(run)  # sampling reads the EMA weights


def test_checkpoint_retention_and_latest_pointer(tmp_path):
    run = train_tiny_teacher(tmp_path / "r", steps=6, extra=["train.ckpt_every=1", "train.keep_checkpoints=2"])
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert steps == ["step_00000005", "step_00000006"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    assert not list((run / "checkpoints").glob(".*tmp*"))


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    run = train_tiny_teacher(tmp_path / "r", steps=2)
    before = ckpt_io.latest_checkpoint(run)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io, "write_json_atomic", boom)
    with pytest.raises(OSError):
        train_tiny_teacher(run, steps=3)
    assert ckpt_io.latest_checkpoint(run) == before
    assert not list((run / "checkpoints").glob(".*tmp*"))


# ----------------------------------------------------------------------------- a toy method for the guard


@dataclass
class ToyConfig:
    nan_from_step: int = 10**9


class Toy(Method):
    name = "toy"
    Config = ToyConfig
    needs_data = False

    def build(self):
        self.logged_at = []
        torch.manual_seed(0)
        m = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 1))
        return {"net": Net(m, trainable=True, frozen=("0.",), ema=True)}

    def phases(self):
        return [Phase("fit", self.fit, trains=("net",))]

    def fit(self, ctx):
        out = ctx.net("net")(torch.arange(4)).sum()
        if ctx.logged:
            self.logged_at.append(ctx.step)
        if ctx.step >= self.cfg.nan_from_step:
            out = out * float("nan")
        return StepOut((out - 1.0) ** 2)


def _toy_trainer(tmp_path, cfg, **train):
    tc = TrainConfig(steps=train.pop("steps", 5), batch_size=1, warmup_steps=0, log_every=train.pop("log_every", 1),
                     ckpt_every=2, **train)
    return Trainer(Toy(cfg, None), tc, tmp_path, {"method": {"name": "toy"}, "data": {}, "train": {}})


def test_frozen_parameters_stay_bit_identical(tmp_path):
    tr = _toy_trainer(tmp_path, ToyConfig())
    tr.fit()
    net = tr.raw["net"]
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 1))
    assert torch.equal(net[0].weight, ref[0].weight)  # frozen prefix "0."
    assert not torch.equal(net[1].weight, ref[1].weight)  # trained


def test_steps_know_whether_their_logs_are_written(tmp_path):
    tr = _toy_trainer(tmp_path, ToyConfig(), steps=5, log_every=2)
    tr.fit()
    written = [json.loads(line)["step"] for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert written == [2, 4, 5]  # every 2nd step and the last
    assert tr.method.logged_at == [1, 3, 4]  # the 0-based steps whose logs those are


def test_nan_guard_skips_bad_steps_then_stops_with_a_clear_error(tmp_path):
    tr = _toy_trainer(tmp_path, ToyConfig(nan_from_step=3), steps=50, max_bad_steps=4)
    with pytest.raises(FewstepError, match="4 consecutive non-finite"):
        tr.fit()
    # the weights never saw the NaN steps, and the last checkpoint holds those finite weights
    assert torch.isfinite(tr.raw["net"][1].weight).all()
    from safetensors.torch import load_file

    saved = load_file(str(ckpt_io.latest_checkpoint(tmp_path) / "net.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert torch.equal(saved["1.weight"], tr.raw["net"][1].weight)


def test_ema_follows_the_warmup_formula(tmp_path):
    from fewstep.ema import EMA

    m = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(m.weight)
    ema = EMA(m, decay=0.9, warmup=True)
    expected = 0.0
    for n in range(5):
        m.weight.data.fill_(float(n + 1))
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * (n + 1)
        ema.update(m)
    assert abs(float(ema.module.weight) - expected) < 1e-6


def test_two_process_data_parallel_training_runs_and_resumes(tmp_path):
    """torchrun with 2 CPU processes (gloo): the checkpoint records both ranks and resumes in one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "FEWSTEP_THREADS": "1", "FEWSTEP_PROGRESS": "0", "FEWSTEP_QUIET": "0"}
    cmd = [str(exe), "--nproc_per_node=2", "--master_addr=127.0.0.1", "--master_port=29541", "-m", "fewstep.cli.main",
           "train", "teacher", "--data", "digits", "--out", str(tmp_path / "r"), *TINY, "train.steps=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    latest = ckpt_io.latest_checkpoint(tmp_path / "r")
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["world_size"] == 2 and len(meta["rng"]) == 2
    assert (latest / "rng_rank1.safetensors").is_file()
    assert res.stderr.count("training 'maskgit'") == 1  # status lines from rank 0 only
    train_tiny_teacher(tmp_path / "r", steps=3)  # continues in a single process
    assert ckpt_io.latest_checkpoint(tmp_path / "r").name == "step_00000003"

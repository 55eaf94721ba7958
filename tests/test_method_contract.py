"""Every registered method, on tiny networks: the contract between methods and the one trainer."""

import json

import pytest
import torch

from fewstep import checkpoint as ckpt_io
from fewstep.experiment import build_experiment
from fewstep.methods import METHODS
from fewstep.trainer import Trainer

TRAIN = ["train.batch_size=8", "train.warmup_steps=1", "train.log_every=1", "train.ckpt_every=1",
         "train.keep_checkpoints=0", "train.lr=1e-3"]


def _experiment(name, workdir, steps):
    setup = METHODS[name].contract_setup(workdir)
    over = TRAIN + [f"train.steps={steps}"]
    over += [f"method.{k}={v}" for k, v in setup.get("method", {}).items()]
    return build_experiment(name, setup["data"], None, over)


def _snapshot(nets):
    return {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in nets.items()}


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request, tmp_path_factory):
    name = request.param
    work = tmp_path_factory.mktemp(name)
    exp = _experiment(name, work, steps=2)
    tr = Trainer(exp.method, exp.train, work / "run", exp.record, show_progress=False)
    tr._setup()
    before = _snapshot(tr.raw)
    tr.fit()  # _setup again inside fit: build() must be deterministic for the comparison to hold
    return name, work, tr, before


def test_phases_train_only_declared_trainable_networks(trained):
    _, _, tr, _ = trained
    declared = {n for n, v in tr.nets.items() if v.trainable}
    assert tr.phase_list and all(set(p.trains) <= declared for p in tr.phase_list)


def test_every_phase_logs_a_finite_loss(trained):
    _, work, tr, _ = trained
    rows = [json.loads(line) for line in (work / "run" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, tr.total_steps + 1))  # 2 + stage_steps()
    for phase in tr.phase_list:
        for r in rows:
            if phase.active(r["step"] - 1):
                assert r[f"{phase.name}/loss"] is not None and torch.isfinite(torch.tensor(r[f"{phase.name}/loss"]))


def test_frozen_parameters_are_bit_identical_and_trained_ones_move(trained):
    _, _, tr, before = trained
    after = _snapshot(tr.raw)
    for name, net in tr.nets.items():
        frozen_keys = set(before[name])
        if net.trainable:
            trainable = {k for k, _ in net.trainable_parameters()}
            frozen_keys = {k for k in before[name] if k.startswith(net.frozen)}
            moved = [k for k in trainable if not torch.equal(before[name][k], after[name][k])]
            assert moved, f"no trainable parameter of '{name}' changed"
        for k in frozen_keys:
            if k in dict(tr.raw[name].named_parameters()):
                assert torch.equal(before[name][k], after[name][k]), f"frozen {name}.{k} changed"


def test_checkpoint_round_trip_and_generation(trained):
    from fewstep.runs import load_run

    name, work, tr, _ = trained
    run = load_run(work / "run", prefer_ema=False)
    for n in run.nets:
        for k, v in run.nets[n].state_dict().items():
            assert torch.equal(v, tr.raw[n].state_dict()[k].cpu())
    if getattr(run.method_cls, "generative", True):
        labels = torch.tensor([0, 1, 2])
        out = run.generate(labels, [0, 1, 2])
        assert out.shape[0] == 3 and torch.isfinite(out.float()).all()
        if run.info["kind"] == "masked":
            assert out.dtype == torch.long and out.shape[1] == run.info["seq_len"]
        else:
            assert list(out.shape[1:]) == run.info["shape"]
        assert torch.allclose(out[1:2].float(), run.generate(labels[1:2], [1]).float(), atol=1e-5)


def test_resume_matches_uninterrupted_training(trained, tmp_path):
    name, work, _, _ = trained
    straight = _experiment(name, tmp_path / "a", steps=3)
    Trainer(straight.method, straight.train, tmp_path / "a" / "run", straight.record, show_progress=False).fit()
    first = _experiment(name, tmp_path / "b", steps=2)
    Trainer(first.method, first.train, tmp_path / "b" / "run", first.record, show_progress=False).fit()
    second = _experiment(name, tmp_path / "b", steps=3)
    Trainer(second.method, second.train, tmp_path / "b" / "run", second.record, show_progress=False).fit()
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "run" / "stats.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "run" / "stats.jsonl").read_text().splitlines()]
    a3 = {k: v for k, v in rows_a[-1].items() if k != "time"}
    b3 = {k: v for k, v in rows_b[-1].items() if k != "time"}
    assert a3 == b3
    la, lb = ckpt_io.latest_checkpoint(tmp_path / "a" / "run"), ckpt_io.latest_checkpoint(tmp_path / "b" / "run")
    for f in sorted(p.name for p in la.glob("*.safetensors") if not p.name.startswith("rng")):
        assert (la / f).read_bytes() == (lb / f).read_bytes(), f

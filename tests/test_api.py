"""The Python API does what the CLI verbs do, on the same run folders."""

import json

import pytest
import torch

from fewstep.api import compare, distill, evaluate, load_run, train_teacher
from fewstep.cli.main import main
from fewstep.errors import FewstepError

TINY_EDM = ["method.channels=[8,16]", "method.emb_dim=16", "train.steps=2", "train.batch_size=8",
            "train.warmup_steps=1", "method.sample_steps=2"]


def test_train_distill_evaluate_match_the_cli(tmp_path, capsys):
    teacher = train_teacher("digits", tmp_path / "edm", kind="edm", overrides=TINY_EDM)
    assert teacher.method_name == "edm" and teacher.step == 2
    student = distill("dmd2", teacher, tmp_path / "dmd2", overrides=[
        "train.steps=2", "train.batch_size=8", "method.critic_updates=1"])
    assert student.method_name == "dmd2" and student.step == 2
    assert student.config["method"]["teacher"] == str(tmp_path / "edm")  # the run folder, not its checkpoint
    x = student.generate(torch.tensor([3, 3, 7]), seeds=[0, 1, 2])
    assert x.shape == (3, 1, 8, 8) and not torch.equal(x[0], x[1])

    res = evaluate(student, n=40)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "dmd2"), "--n", "40", "--json", str(tmp_path / "e.json")]) == 0
    cli = json.loads((tmp_path / "e.json").read_text())
    assert res["metrics"]["fid"] == pytest.approx(cli["metrics"]["fid"], rel=1e-6)  # same seeds, same samples
    assert load_run(tmp_path / "dmd2").step == 2
    two = evaluate(student, n=40, repeats=2)  # its block 0 is the same noise as the one-block eval's
    paired = compare(res, two)
    assert paired["blocks"] == 1 and paired["diff"] == pytest.approx(0, abs=1e-9)
    assert len(set(two["blocks"]["fid"])) == 2

    with pytest.raises(FewstepError, match="do not apply to 'dmd2' runs"):
        evaluate(student, n=40, steps=4)
    with pytest.raises(FewstepError, match="n >= 2"):
        evaluate(student, n=1)
    with pytest.raises(FewstepError, match="is a 'dmd2' run, not a continuous"):
        distill("msd", student, tmp_path / "msd")

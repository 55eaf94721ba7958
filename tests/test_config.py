from dataclasses import dataclass

import pytest

from fewstep.config import from_dict, parse_overrides
from fewstep.errors import FewstepError
from fewstep.experiment import build_experiment


@dataclass
class Inner:
    a: int = 1
    b: float | None = 0.5
    c: tuple[float, float] = (0.9, 0.99)


def test_overrides_are_typed_and_nested():
    over = parse_overrides(["a=3", "b=none", "c=[0.5, 0.6]"])
    cfg = from_dict(Inner, over)
    assert cfg == Inner(a=3, b=None, c=(0.5, 0.6))
    assert from_dict(Inner, {"a": "7"}).a == 7


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(FewstepError, match=r"unknown config key 'x\.d'; valid keys here: a, b, c"):
        from_dict(Inner, {"d": 1}, prefix="x.")


def test_wrong_type_is_a_clear_error():
    with pytest.raises(FewstepError, match="'a' expects an integer, got 'many'"):
        from_dict(Inner, {"a": "many"})
    with pytest.raises(FewstepError, match="expects an integer"):
        from_dict(Inner, {"a": 1.5})


def test_experiment_merges_preset_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method:\n  dim: 64\ntrain:\n  steps: 7\n")
    exp = build_experiment("maskgit", {"name": "digits"}, str(f), ["train.steps=9", "method.heads=4"])
    assert exp.record["method"]["dim"] == 64  # file beats preset
    assert exp.record["train"]["steps"] == 9  # override beats file
    assert exp.record["method"]["heads"] == 4
    assert exp.record["train"]["batch_size"] == 128  # from the digits preset


@pytest.mark.parametrize("over,msg", [
    (["method.dimm=3"], "unknown config key 'method.dimm'"),
    (["trian.steps=3"], "unknown config section 'trian'"),
    (["method.schedule=cosin"], "unknown mask schedule 'cosin'"),
    (["train.precision=fp8"], "precision must be fp32, bf16 or fp16"),
    (["steps"], "must look like key=value"),
])
def test_bad_overrides(over, msg):
    with pytest.raises(FewstepError, match=msg):
        build_experiment("maskgit", {"name": "digits"}, None, over)

"""scripts/branch_run.py: one checkpoint of a run, settings changed, that `fewstep` resumes with its optimizer state."""

import json
import shutil

import pytest

from fewstep.checkpoint import read_checkpoint_json, resolve_checkpoint

from helpers import TINY_TEACHER, load_script


def config_lr(ckpt) -> float:
    return read_checkpoint_json(ckpt)[0]["train"]["lr"]


def test_branch_resumes_with_the_changed_settings_and_learning_rate(tmp_path, digits_teacher):
    from fewstep.cli.commands import train_run

    src = resolve_checkpoint(digits_teacher)
    out = tmp_path / "branch"
    load_script("branch_run").main([str(digits_teacher), str(out), "train.lr=2.5e-05", "method.label_smoothing=0.2"])
    config, meta = read_checkpoint_json(resolve_checkpoint(out))
    assert config["train"]["lr"] == 2.5e-05 and config["method"]["label_smoothing"] == 0.2
    groups = [g for opt in meta["optimizers"].values() for g in opt["param_groups"]]
    assert groups and all(g["base_lr"] == 2.5e-05 for g in groups)
    assert config_lr(src) != 2.5e-05  # the source run is untouched

    step, lr = meta["step"], {}
    over = [o for o in TINY_TEACHER if not o.startswith("train.steps")] + [f"train.steps={step + 1}"]
    same = tmp_path / "same"  # the same step resumed with nothing changed: the schedule's factor at this step
    load_script("branch_run").main([str(digits_teacher), str(same), "method.label_smoothing=0.2"])
    for run, extra in ((out, ["train.lr=2.5e-05"]), (same, [])):
        train_run("maskgit", {"name": "digits"}, str(run), overrides=over + extra + ["method.label_smoothing=0.2"])
        rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [step + 1]  # resumed, not restarted
        lr[run] = next(v for k, v in rows[0].items() if k.endswith("/lr"))
    assert lr[out] / lr[same] == pytest.approx(2.5e-05 / config_lr(src))


def test_branch_refuses_unknown_keys_and_existing_folders(tmp_path, digits_teacher):
    branch = load_script("branch_run").main
    with pytest.raises(SystemExit, match="'method.no_such' is not in the checkpoint's config; its method fields:"):
        branch([str(digits_teacher), str(tmp_path / "a"), "method.no_such=1"])
    with pytest.raises(SystemExit, match="write KEY=VALUE"):
        branch([str(digits_teacher), str(tmp_path / "a"), "lr=1"])
    assert not (tmp_path / "a").exists()
    # an option the method gained after the checkpoint was written is a method field too
    old = tmp_path / "old" / resolve_checkpoint(digits_teacher).name
    shutil.copytree(resolve_checkpoint(digits_teacher), old)
    config = json.loads((old / "config.json").read_text())
    del config["method"]["label_smoothing"]
    (old / "config.json").write_text(json.dumps(config))
    branch([str(old), str(tmp_path / "b"), "method.label_smoothing=0.3"])
    assert read_checkpoint_json(resolve_checkpoint(tmp_path / "b"))[0]["method"]["label_smoothing"] == 0.3
    with pytest.raises(SystemExit, match="exists; pick a new folder"):
        branch([str(digits_teacher), str(tmp_path), "train.lr=1e-4"])

"""Every CLI verb end to end on tiny models, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewstep.cli.main import main
from fewstep.demo import SHIPPED_TEACHER
from fewstep.errors import FewstepError

from helpers import TINY_TEACHER


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_train_teacher_sample_eval(tmp_path, capsys):
    run = tmp_path / "t"
    code, _, err = run_cli(capsys, "train", "teacher", "--data", "digits", "--out", run, *TINY_TEACHER)
    assert code == 0, err
    assert (run / "checkpoints" / "latest").is_file() and (run / "stats.jsonl").is_file()
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 20, "--steps", 2, "--out", tmp_path / "g.png",
                           "--tokens", tmp_path / "t.safetensors")
    assert code == 0, err
    assert (tmp_path / "g.png").stat().st_size > 100
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "t.safetensors"))
    assert saved["tokens"].shape == (20, 64) and saved["labels"].tolist()[:3] == [0, 1, 2]
    code, out, err = run_cli(capsys, "eval", "--run", run, "--n", 40, "--steps", 2, "--cfg", 1.5)
    assert code == 0, err
    res = json.loads(out)
    assert set(res["metrics"]) >= {"fid", "kid", "precision", "recall", "density", "coverage", "class_acc"}
    assert res["floor"]["n"] == 40 and res["sampler"]["steps"] == 2 and res["sampler"]["cfg"] == 1.5
    assert (run / "eval.json").is_file()


def test_dry_run_prints_resolved_config(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "teacher", "--data", "digits", "--dry-run", "method.dim=48")
    assert code == 0
    cfg = json.loads(out)
    assert cfg["method"]["dim"] == 48 and cfg["method"]["name"] == "maskgit" and cfg["data"]["name"] == "digits"


def test_tokenizer_then_teacher_on_idx_folder(tmp_path, capsys, fake_fashion_dir):
    tok = tmp_path / "tok"
    code, out, err = run_cli(capsys, "train", "tokenizer", "--data", "fashion_mnist", "--data-dir", fake_fashion_dir,
                             "--out", tok, "train.steps=3", "train.batch_size=16", "method.channels=16",
                             "method.codebook_size=16", "method.code_dim=8")
    assert code == 0, err
    report = json.loads(out)
    assert report["grid"] == [7, 7] and "fid" in report["recon"] and "fid" in report["floor"]
    assert (tok / "recon.png").is_file()
    run = tmp_path / "t"
    code, _, err = run_cli(capsys, "train", "teacher", "--data", "fashion_mnist", "--data-dir", fake_fashion_dir,
                           "--tokenizer", tok, "--out", run, *TINY_TEACHER)
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 10, "--steps", 2, "--out", tmp_path / "f.png")
    assert code == 0, err


def test_bench_teacher_writes_json_markdown_and_pictures(tmp_path, capsys, digits_teacher, monkeypatch):
    monkeypatch.setenv("FEWSTEP_QUIET", "0")
    out = tmp_path / "bench"
    code, stdout, err = run_cli(capsys, "bench", "teacher", "--data", "digits", "--teacher", digits_teacher,
                                "--out", out, "--n", 30, "--steps", "1,2", "--cfg", 2.0, "--remask", "random",
                                "--desmooth", 0.1)
    assert code == 0, err
    data = json.loads((out / "bench_teacher.json").read_text())
    assert data["sampler"]["remask"] == "random" and data["sampler"]["desmooth"] == 0.1
    assert [(r["steps"], r["cfg"]) for r in data["results"]] == [(1, 1.0), (1, 2.0), (2, 1.0), (2, 2.0)]
    assert all(r["samples_per_s"] > 0 for r in data["results"])
    md = (out / "bench_teacher.md").read_text()
    assert "| steps | CFG | FID |" in md and "Machine:" in md and "not Inception" in md
    assert "remask random" in md and "desmooth 0.1" in md
    assert err.count("maskgit (steps=") == 4 and "fid" in err  # progress: one line per evaluated setting
    assert (out / "teacher_fid_vs_steps.png").is_file() and (out / "teacher_steps_grid.png").is_file()


def test_synthetic_teacher_eval_uses_exact_metrics(tmp_path, capsys):
    run = tmp_path / "s"
    code, _, err = run_cli(capsys, "train", "teacher", "--data", "synthetic", "--out", run, *TINY_TEACHER)
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "--run", run, "--n", 200, "--steps", 4)
    assert code == 0, err
    assert {"pair_kl", "nll_gap", "unigram_kl"} <= set(json.loads(out)["metrics"])


def test_eval_checkpoints_scores_each_saved_step_once(tmp_path, capsys):
    run = tmp_path / "s"
    code, _, err = run_cli(capsys, "train", "teacher", "--data", "synthetic", "--out", run, *TINY_TEACHER,
                           "train.steps=2", "train.ckpt_every=1")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "--run", run, "--checkpoints", "--n", 100, "--steps", 2)
    assert code == 0, err
    lines = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and [json.loads(x) for x in out.splitlines()] == lines
    code, out, _ = run_cli(capsys, "eval", "--run", run / "checkpoints" / "step_00000001", "--n", 100, "--steps", 2)
    assert json.loads(out)["metrics"]["pair_kl"] == lines[0]["pair_kl"]  # the line belongs to that checkpoint
    code, out, err = run_cli(capsys, "eval", "--run", run, "--checkpoints", "--n", 100, "--steps", 2)
    assert code == 0 and out == ""  # already scored with these settings
    code, out, err = run_cli(capsys, "eval", "--run", run, "--checkpoints", "--n", 50, "--steps", 2)
    assert code == 0 and len((run / "eval.jsonl").read_text().splitlines()) == 4
    code, _, err = run_cli(capsys, "eval", "--run", run / "checkpoints" / "step_00000001", "--checkpoints")
    assert code == 2 and "takes a run folder" in err
    code, _, err = run_cli(capsys, "eval", "--run", run, "--checkpoints", "--json", tmp_path / "e.json")
    assert code == 2 and "drop --json" in err


def test_info_lists_registries(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0 and "maskgit" in out and "fashion_mnist" in out


@pytest.mark.parametrize("argv,msg", [
    (["train", "teacher", "--data", "digitz"], "unknown dataset 'digitz'"),
    (["train", "teacher", "--data", "digits", "method.depht=2"], "unknown config key 'method.depht'"),
    (["train", "teacher", "--data", "digits", "--config", "/nope.yaml"], "config file '/nope.yaml' does not exist"),
    (["sample", "--run", "/no/such/run"], "'/no/such/run' does not exist"),
    (["train", "teacher", "--data", "fashion_mnist", "--data-dir", "/tmp"], "apt-get install dataset-fashion-mnist"),
    (["train", "teacher", "--data", "digits", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "teacher"], "the following arguments are required: --data"),
    (["bench", "teacher", "--data", "digits", "train.steps=2"], "unrecognized arguments: train.steps=2"),
    (["train", "teacher", "--data", "digits", "method.dim=8", "--out", "x", "stray"], "unrecognized arguments: stray"),
    # values torch would take silently (a clip of 0 zeroes every gradient) or reject with a traceback
    (["train", "teacher", "--data", "digits", "train.grad_clip=0"], "grad_clip must be > 0, or null to never clip"),
    (["train", "teacher", "--data", "digits", "train.lr=-1"], "lr and adam_eps must be > 0"),
    (["train", "teacher", "--data", "digits", "train.ema_decay=1.5"], "ema_decay and both betas must be in [0, 1)"),
    (["train", "teacher", "--data", "digits", "train.ckpt_every=0"], "ckpt_every and max_bad_steps >= 1"),
    (["distill", "dmd2", "--teacher", SHIPPED_TEACHER, "method.critic_lr=0"],
     "critic_lr must be > 0"),
    (["distill", "dmd2", "--teacher", SHIPPED_TEACHER, "method.teacher_cfg=-0.5"], "teacher_cfg must be >= 0"),
    (["bench", "dmd2", "--data", "digits", "--speed-timings", "0"], "--speed-timings must be >= 1"),
])
def test_bad_input_gives_one_line_error(capsys, argv, msg):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err


def test_overrides_may_follow_later_flags():
    from fewstep.cli.main import parse

    args = parse(["distill", "dmd2", "--teacher", "T", "method.gan=false", "--out", "R", "train.steps=3", "train.lr=1"])
    assert args.out == "R" and args.overrides == ["method.gan=false", "train.steps=3", "train.lr=1"]


@pytest.mark.parametrize("override,msg", [
    ("method.channels=[]", "channels must list one positive integer width per resolution level"),
    ("method.channels=[8,0]", "got [8, 0]"),
    ("method.channels=[8,8,8,8,8]", "needs a size divisible by 16; use at most 4 levels"),
    ("method.sample_solver=rk4", "sample_solver must be heun or euler"),
])
def test_bad_edm_architecture_is_a_one_line_error_and_leaves_no_run(tmp_path, capsys, override, msg):
    out = tmp_path / "edm"
    code, _, err = run_cli(capsys, "train", "teacher", "--kind", "edm", "--data", "digits", "--out", out, override)
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and lines[-1].startswith("error: ") and msg in lines[-1], err
    assert not any(line.startswith(("Traceback", "  File")) for line in lines) and not out.exists()


def test_sample_errors(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(capsys, "sample", "--run", digits_teacher, "--n", 4, "--classes", "3,12")
    assert code == 2 and "out of range" in err
    code, _, err = run_cli(capsys, "sample", "--run", digits_teacher, "--n", 4, "--out", tmp_path / "grid.txt")
    assert code == 2 and "must be an image file ending in .png" in err and not (tmp_path / "grid.txt").exists()
    code, _, err = run_cli(capsys, "sample", "--run", digits_teacher, "--n", 4, "--r-init", 0.5)
    assert code == 2 and "do not apply to 'maskgit'" in err
    for flag, value, msg in [("--steps", 0, "steps must be >= 1"), ("--temperature", 0, "temperature must be > 0"),
                             ("--desmooth", 1.0, "desmooth must be in [0, 1)"), ("--top-k", 0, "top_k must be >= 1")]:
        code, _, err = run_cli(capsys, "sample", "--run", digits_teacher, "--n", 2, flag, value)
        assert code == 2 and err.strip().count("\n") == 0 and msg in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "eval", "--run", empty)
    assert code == 2 and "holds no checkpoint" in err


def test_console_script_runs():
    exe = Path(sys.executable).parent / "fewstep"
    res = subprocess.run([str(exe), "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "methods:" in res.stdout


def test_distill_dimo_sample_eval_export(tmp_path, capsys, digits_teacher, monkeypatch):
    run = tmp_path / "d"
    code, _, err = run_cli(capsys, "distill", "dimo", "--teacher", digits_teacher, "--out", run, "--eval-every", 2,
                           "train.steps=2", "train.batch_size=8", "method.beta=-0.2", "finetune.train.steps=2")
    assert code == 0, err
    assert len((run / "eval.jsonl").read_text().splitlines()) == 1
    assert json.loads((run / "config.json").read_text())["method"]["init_from"] == str(run / "base")
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 10, "--temperature", 0.5, "--r-init", 0.8,
                           "--out", tmp_path / "s.png")
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 10, "--steps", 4)
    assert code == 2 and "do not apply to 'dimo'" in err
    monkeypatch.setenv("FEWSTEP_QUIET", "0")  # the per-block status line
    code, out, err = run_cli(capsys, "eval", "--run", run, "--n", 30, "--repeats", 2)
    assert code == 0 and "block 1: fid" in err, err
    res = json.loads(out)
    assert res["repeats"] == 2 and "fid_std" in res["metrics"] and res["method"] == "dimo"
    blocks = res["blocks"]["fid"]
    assert len(blocks) == 2 and abs(sum(blocks) / 2 - res["metrics"]["fid"]) < 1e-9 and blocks[0] != blocks[1]
    # a third block added later gives what three blocks at once give
    (tmp_path / "e2.json").write_text(out)
    code, _, err = run_cli(capsys, "eval", "--run", run, "--extend", tmp_path / "e2.json", "--repeats", 3,
                           "--json", tmp_path / "e3.json")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "--run", run, "--n", 30, "--repeats", 3)
    extended, fresh = json.loads((tmp_path / "e3.json").read_text()), json.loads(out)
    assert extended["blocks"]["fid"][:2] == blocks and extended["repeats"] == 3
    assert extended["blocks"]["fid"] == pytest.approx(fresh["blocks"]["fid"])
    assert extended["blocks"]["recall"] == pytest.approx(fresh["blocks"]["recall"])
    assert extended["metrics"] == pytest.approx(fresh["metrics"])
    code, _, err = run_cli(capsys, "eval", "--run", run, "--extend", tmp_path / "e2.json", "--repeats", 3, "--cfg", 3)
    assert code == 2 and "drop --cfg" in err
    code, _, err = run_cli(capsys, "eval", "--run", run, "--extend", tmp_path / "e2.json", "--repeats", 2)
    assert code == 2 and "already has 2 blocks" in err
    # interrupted in its third block, an eval keeps the two it scored, and --extend goes on from there
    import fewstep.metrics.evaluate as evaluate_module

    real_evaluate_run, calls = evaluate_module.evaluate_run, []

    def interrupted_at_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate_run(*a, **k)

    monkeypatch.setattr(evaluate_module, "evaluate_run", interrupted_at_third)
    code, _, err = run_cli(capsys, "eval", "--run", run, "--n", 30, "--repeats", 3, "--json", tmp_path / "p.json")
    assert code == 130 and err.count("is saved to") == 1
    monkeypatch.setattr(evaluate_module, "evaluate_run", real_evaluate_run)
    kept = json.loads((tmp_path / "p.json").read_text())
    assert kept["repeats"] == 2 and kept["blocks"]["fid"] == pytest.approx(fresh["blocks"]["fid"][:2])
    code, _, err = run_cli(capsys, "eval", "--run", run, "--extend", tmp_path / "p.json", "--repeats", 3)
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["metrics"] == pytest.approx(fresh["metrics"])
    code, _, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "slim")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "slim").iterdir())
    assert names == ["aux_ema.safetensors", "config.json", "generator_ema.safetensors", "meta.json"]
    code, _, err = run_cli(capsys, "sample", "--run", tmp_path / "slim", "--n", 4, "--out", tmp_path / "x.png")
    assert code == 0, err
    code, _, err = run_cli(capsys, "export", "--run", run, "--out", tmp_path / "slim")
    assert code == 2 and "not empty" in err


def test_distill_requires_a_matching_teacher(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(capsys, "distill", "dmd2", "--teacher", digits_teacher, "--out", tmp_path / "x")
    assert code == 2 and "not a continuous (EDM) teacher" in err
    code, _, err = run_cli(capsys, "bench", "dmd2", "--data", "digits", "--teacher", digits_teacher,
                           "--out", tmp_path / "b")
    assert code == 2 and "is a 'maskgit' run, not a continuous (EDM) teacher" in err


def test_demo_fast(tmp_path, capsys):
    code, _, err = run_cli(capsys, "demo", "--fast", "--out", tmp_path / "demo")
    assert code == 0, err
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(m["teacher_by_steps"]) == {"1", "2", "4", "8", "16"} and "fid" in m["student"]
    assert m["speedup_vs_teacher_16"] > 1
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "DiMO student" in html and "not Inception" in html


def test_bench_dimo_and_dmd2_tiny(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(capsys, "bench", "dimo", "--data", "digits", "--teacher", digits_teacher, "--out",
                           tmp_path / "bd", "--n", 20, "--steps", "1,2", "--ablations", "sigma_init",
                           "--ablation-steps", 1, "--speed-timings", 3, "train.steps=1", "train.batch_size=8",
                           "finetune.train.steps=0")
    assert code == 0, err
    data = json.loads((tmp_path / "bd" / "bench_dimo.json").read_text())
    assert [a["label"] for a in data["ablations"]["sigma_init"]][:2] == ["sigma_init=0.0", "sigma_init=0.1"]
    speed = data["speed"]
    assert speed["student"]["timings"] == 3 and speed["student"]["n"] == 20
    assert speed["speedup"] == speed["student"]["gen_samples_per_s"] / speed["teacher16_cfg"]["gen_samples_per_s"]
    assert speed["student"]["samples_per_s"] < speed["student"]["gen_samples_per_s"]  # decoding costs time
    assert len(data["temperature_sweep"]) == 8
    cfg = data["student_config"]
    assert data["teacher_as_distilled"]["label"] == (
        f"teacher as distilled: random order, 64 steps, CFG {cfg['teacher_cfg']} {cfg['teacher_cfg_ramp']}, "
        f"T {cfg['teacher_temp']}, smoothing {cfg['aux_label_smoothing']} removed")
    from helpers import train_tiny_edm

    edm = train_tiny_edm(tmp_path / "edm")
    code, _, err = run_cli(capsys, "bench", "dmd2", "--data", "digits", "--teacher", edm, "--out", tmp_path / "b2",
                           "--n", 20, "--only", "no GAN", "train.steps=1", "train.batch_size=8",
                           "method.critic_updates=1")
    assert code == 0, err
    data = json.loads((tmp_path / "b2" / "bench_dmd2.json").read_text())
    assert [r["nfe"] for r in data["teacher_by_steps"]] == [1, 3, 5, 9, 17, 35]
    assert [s["label"] for s in data["students"]] == ["DMD2 1-step, no GAN, critic ratio 5"]
    md = (tmp_path / "b2" / "bench_dmd2.md").read_text()
    assert "| real data (test vs train) |" in md
    # samples/s: the median of 5 timings of 20 samples each, apart from the scoring, for every row
    speeds = [r["speed"] for r in data["teacher_by_steps"] + data["students"]]
    assert all(sp["timings"] == 5 and sp["n"] == 20 for sp in speeds)
    assert speeds[0]["gen_samples_per_s"] > speeds[5]["gen_samples_per_s"]  # 1 network evaluation against 35
    best = min(data["teacher_by_steps"], key=lambda r: r["metrics"]["fid"])
    ratio = data["students"][0]["speed"]["samples_per_s"] / best["speed"]["samples_per_s"]
    assert f"{ratio:.1f}x the samples/s of the teacher's best fid (Heun {best['steps']} steps)" in md
    trained = data["students"][0]["run"]
    code, _, err = run_cli(capsys, "bench", "dmd2", "--data", "digits", "--teacher", edm, "--out", tmp_path / "b3",
                           "--n", 20, "--steps", "2", "--student", trained)
    assert code == 0, err
    again = json.loads((tmp_path / "b3" / "bench_dmd2.json").read_text())
    assert [r["nfe"] for r in again["teacher_by_steps"]] == [3]
    assert [s["label"] for s in again["students"]] == [f"DMD2 1-step: {trained}"]
    assert again["students"][0]["metrics"] == data["students"][0]["metrics"]  # the same run, the same seeds
    code, _, err = run_cli(capsys, "bench", "dmd2", "--data", "digits", "--teacher", edm, "--out", tmp_path / "b4",
                           "--n", 20, "--steps", "2", "--student", edm)
    assert code == 2 and "is a 'edm' run on digits, not a DMD2 or MSD student" in err
    code, _, err = run_cli(capsys, "bench", "msd", "--data", "digits", "--teacher", edm, "--out", tmp_path / "bm",
                           "--n", 400, "--only", "K=2", "train.steps=1", "train.batch_size=8", "method.critic_updates=1")
    assert code == 0, err
    # 400 samples against a floor of the 359 test digits: FID's small-n bias differs, so no floor row
    assert "real data" not in (tmp_path / "bm" / "bench_msd.md").read_text()
    student = json.loads((tmp_path / "bm" / "bench_msd.json").read_text())["students"][0]
    assert student["label"] == "MSD K=2"
    assert json.loads((Path(student["run"]) / "config.json").read_text())["train"]["batch_size"] == 4  # B / K


def test_edm_teacher_on_ring2d_and_digits(tmp_path, capsys):
    run = tmp_path / "ring"
    code, _, err = run_cli(capsys, "train", "teacher", "--kind", "edm", "--data", "ring2d", "--out", run,
                           "train.steps=3", "train.batch_size=32", "method.mlp_hidden=32")
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 64, "--steps", 3, "--out", tmp_path / "r.png")
    assert code == 0 and (tmp_path / "r.png").is_file(), err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", 16, "--steps", 2, "--out", tmp_path / "r.svg")
    assert code == 0 and (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml"), err
    code, out, err = run_cli(capsys, "eval", "--run", run, "--n", 100, "--steps", 2, "--solver", "euler")
    assert code == 0, err
    for flag, value, msg in [("--steps", 0, "steps must be >= 1"), ("--noise-scale", 0, "noise_scale must be > 0"),
                             ("--sigma-scale", -1, "sigma_scale must be > 0"), ("--cfg", -1, "cfg must be >= 0")]:
        code, _, err = run_cli(capsys, "eval", "--run", run, "--n", 100, flag, value)
        assert code == 2 and msg in err and err.strip().count("\n") == 0, err
    assert {"energy", "precision", "class_acc", "modes_hit"} <= set(json.loads(out)["metrics"])
    from helpers import train_tiny_edm

    img = train_tiny_edm(tmp_path / "img")
    code, _, err = run_cli(capsys, "sample", "--run", img, "--n", 10, "--steps", 2, "--cfg", 1.5,
                           "--out", tmp_path / "i.png")
    assert code == 0, err
    (tmp_path / "file").write_text("")
    for argv in (["sample", "--run", img, "--n", 4, "--out", tmp_path / "file" / "s.png"],
                 ["export", "--run", img, "--out", tmp_path / "file" / "slim"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and f"'{tmp_path / 'file'}" in err, err
        assert err.strip().count("\n") == 0, err


def test_bench_variant_selection_by_whole_label_or_substring():
    from fewstep.bench.dmd2 import DMD2_VARIANTS, MSD_VARIANTS, select_variants

    labels = lambda vs: [v[0] for v in vs]
    assert labels(select_variants(MSD_VARIANTS, "MSD K=4")) == ["MSD K=4"]
    assert labels(select_variants(MSD_VARIANTS, "K=4")) == ["MSD K=4", "MSD K=4, smaller students + TSM"]
    assert labels(select_variants(MSD_VARIANTS, "K=2,smaller")) == ["MSD K=2", "MSD K=1, smaller student + TSM",
                                                                     "MSD K=4, smaller students + TSM"]
    with pytest.raises(FewstepError, match="matches no variant; the labels are: MSD K=1"):
        select_variants(MSD_VARIANTS, "K=3")
    first = DMD2_VARIANTS[0][0]
    assert labels(select_variants(DMD2_VARIANTS, first)) == [first]
    assert select_variants(DMD2_VARIANTS, None) == DMD2_VARIANTS


def test_plot_reads_eval_then_stats_and_rejects_bad_input(tmp_path, capsys):
    from fewstep.runlog import read_curve

    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.jsonl").write_text('{"step": 200, "fid": 30.0}\n{"step": 100, "fid": 40.0}\n')
    (run / "stats.jsonl").write_text("".join(json.dumps({"step": s, "time": 0.1, "g/loss": 1.0 / s}) + "\n"
                                             for s in (10, 20)))
    assert read_curve(run, "fid") == ([100, 200], [40.0, 30.0])
    assert read_curve(run, "g/loss") == ([10, 20], [0.1, 0.05])
    with pytest.raises(FewstepError, match="it has: fid, g/loss"):
        read_curve(run, "recall")
    code, _, err = run_cli(capsys, "plot", run, "--out", tmp_path / "c.png", "--hline", "teacher=19.5")
    assert code == 0, err
    assert (tmp_path / "c.png").stat().st_size > 1000
    code, _, err = run_cli(capsys, "plot", run, "--out", tmp_path / "c.png", "--hline", "teacher")
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = run_cli(capsys, "plot", run, run, "--label", "a", "--out", tmp_path / "c.png")
    assert code == 2 and "one --label per run" in err
    code, _, err = run_cli(capsys, "plot", run, "--smooth", 0, "--out", tmp_path / "c.png")
    assert code == 2 and "--smooth must be at least 1" in err


def test_compare_pairs_seed_blocks(tmp_path, capsys):
    def write(name, fids, n=2000, space="classifier on fashion_mnist"):
        path = tmp_path / name
        path.write_text(json.dumps({"n": n, "feature_space": space, "metrics": {"fid": sum(fids) / len(fids)},
                                    "blocks": {"fid": fids}}))
        return path

    base = write("teacher.json", [2.0, 3.0, 2.5])
    # blocks spread by 0.5, the differences by 0.1: the paired error is far below the blocks' own spread
    student = write("student.json", [2.1, 3.2, 2.5, 9.9])  # a 4th block has no partner and is left out
    code, out, err = run_cli(capsys, "compare", base, student, "--json", tmp_path / "c.json")
    assert code == 0, err
    row = json.loads((tmp_path / "c.json").read_text())["comparisons"][0]
    assert row["blocks"] == 3 and row["diffs"] == pytest.approx([0.1, 0.2, 0.0])
    assert row["diff"] == pytest.approx(0.1) and row["diff_std"] == pytest.approx(0.1)
    assert row["diff_se"] == pytest.approx(0.1 / 3 ** 0.5) and row["other"] == pytest.approx(2.6)
    assert "+0.1000 (± 0.0577, per-block spread 0.1000, lower on 0 of 3 blocks)" in out
    code, out, _ = run_cli(capsys, "compare", base, write("mixed.json", [1.5, 3.1, 2.4]))
    assert code == 0 and "lower on 2 of 3 blocks" in out
    code, out, _ = run_cli(capsys, "compare", base, write("one.json", [2.25]))
    assert code == 0 and "+0.2500 (one block: no error estimate)" in out
    for other, msg in [(write("n.json", [2.0], n=1000), "different sample counts"),
                       (write("f.json", [2.0], space="digits"), "different feature spaces"),
                       (tmp_path / "missing.json", "does not exist")]:
        code, _, err = run_cli(capsys, "compare", base, other)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    old = {"n": 2000, "feature_space": "classifier on fashion_mnist", "metrics": {"fid": 2.3}, "repeats": 1}
    (tmp_path / "old.json").write_text(json.dumps(old))  # one block from before evals kept blocks: block 0
    code, out, _ = run_cli(capsys, "compare", base, tmp_path / "old.json")
    assert code == 0 and "+0.3000 (one block" in out
    (tmp_path / "old.json").write_text(json.dumps({**old, "repeats": 2}))
    code, _, err = run_cli(capsys, "compare", base, tmp_path / "old.json")
    assert code == 2 and "no per-block values" in err
    code, _, err = run_cli(capsys, "compare", base, student, "--metric", "recall")
    assert code == 2 and "not 'recall'" in err
    code, _, err = run_cli(capsys, "compare", base, student, "--metric", "fid_class_*")
    assert code == 2 and "no metric of the base eval matches 'fid_class_*'" in err
    per_class = {"n": 2000, "feature_space": "classifier on fashion_mnist", "metrics": {},
                 "blocks": {"fid": [2.0, 3.0], "fid_class_0": [5.0, 6.0], "fid_class_1": [7.0, 8.0]}}
    (tmp_path / "pc.json").write_text(json.dumps(per_class))
    per_class["blocks"] = {k: [v + 1.0 for v in vals] for k, vals in per_class["blocks"].items()}
    (tmp_path / "pc2.json").write_text(json.dumps(per_class))
    code, out, err = run_cli(capsys, "compare", tmp_path / "pc.json", tmp_path / "pc2.json",
                             "--metric", "fid_class_*,fid", "--json", tmp_path / "pc.c.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "pc.c.json").read_text())["comparisons"]
    assert [r["metric"] for r in rows] == ["fid_class_0", "fid_class_1", "fid"]
    assert [r["base"] for r in rows] == [5.5, 7.5, 2.5] and all(r["diff"] == pytest.approx(1.0) for r in rows)
    assert out.count("other - base") == 3
    later = json.loads(student.read_text()) | {"first_block": 3}  # blocks 3-6 share no noise with blocks 0-2
    (tmp_path / "later.json").write_text(json.dumps(later))
    code, _, err = run_cli(capsys, "compare", base, tmp_path / "later.json")
    assert code == 2 and "share no seed block" in err
    from fewstep.bench.common import extend_eval

    fid_only = {"n": 10, "metrics": {"fid": 1.0, "recall": 0.5}, "blocks": {"fid": [1.0, 1.0]}, "repeats": 2}
    with pytest.raises(FewstepError, match="not of recall"):
        extend_eval(None, fid_only, 3)


def test_eval_leaves_the_shipped_teacher_folder_unchanged(tmp_path, capsys):
    before = sorted(p.name for p in SHIPPED_TEACHER.iterdir())
    code, out, err = run_cli(capsys, "eval", "--run", SHIPPED_TEACHER, "--n", 8, "--steps", 1)
    assert code == 0, err
    assert json.loads(out)["n"] == 8
    assert sorted(p.name for p in SHIPPED_TEACHER.iterdir()) == before
    code, _, err = run_cli(capsys, "eval", "--run", SHIPPED_TEACHER, "--n", 8, "--steps", 1, "--json", tmp_path / "e.json")
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 8

"""`fewstep demo`: the whole story on the embedded digits dataset.

teacher (the checkpoint shipped in fewstep/assets, or trained when absent) -> DiMO one-step student ->
evaluation of the teacher at 1/2/4/8/16 steps and of the student -> metrics.json, sample grids,
a quality-vs-steps plot and report.html.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fewstep.bench.common import machine, machine_line, shipped_teacher
from fewstep.checkpoint import SHIPPED_TEACHERS, write_json_atomic
from fewstep.presets import preset
from fewstep.runlog import say

SHIPPED_TEACHER = SHIPPED_TEACHERS / "digits"
TEACHER_STEPS = [1, 2, 4, 8, 16]
FAST_TEACHER = ["method.dim=32", "method.depth=1", "method.heads=2", "train.steps=4", "train.batch_size=16"]
FAST_DIMO = ["train.steps=3", "train.batch_size=8"]
DEMO_DIMO_STEPS = 240  # of the preset's 300, so that `make demo` fits in 10 minutes on 2 CPU cores (1.5 s/step)


def _teacher(out: Path, fast: bool) -> Path:
    from fewstep.cli.commands import train_run

    if fast:
        return train_run("maskgit", {"name": "digits"}, str(out / "teacher"), overrides=FAST_TEACHER)
    if shipped := shipped_teacher("digits"):
        return shipped
    return train_run("maskgit", {"name": "digits"}, str(out / "teacher"))


def comparison_grid(teacher, student, steps_list: list[int], path: Path, per_class: int = 2) -> None:
    """Rows: teacher at each step count, then the one-step student; same classes in every column."""
    from fewstep.metrics.evaluate import decoder_for
    from fewstep.viz import save_grid

    _, tok = decoder_for(teacher)
    c = teacher.info["num_classes"]
    labels = torch.arange(c).repeat_interleave(per_class)
    seeds = list(range(len(labels)))
    rows = [tok.decode(teacher.generate(labels, seeds, steps=s)) for s in steps_list]
    rows.append(tok.decode(student.generate(labels, seeds)))
    save_grid(torch.cat(rows), path, nrow=len(labels))


def run_demo(out: Path, fast: bool = False) -> dict:
    from fewstep.bench.common import repeated_eval
    from fewstep.cli.commands import train_run
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.report import write_report
    from fewstep.runs import load_run
    from fewstep.viz import plot_quality_vs_steps

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    teacher_path = _teacher(out, fast)
    # the demo shows the first stage only: the preset's finetune stage would not fit its time budget
    dimo_overrides = (FAST_DIMO if fast else [f"train.steps={DEMO_DIMO_STEPS}"]) + ["finetune.train.steps=0"]
    student_path = train_run("dimo", {"name": "digits"}, str(out / "dimo"), overrides=dimo_overrides,
                             extra_method={"teacher": str(teacher_path)})
    teacher, student = load_run(teacher_path), load_run(student_path)
    ev = get_evaluator("digits")
    n, repeats = (60, 1) if fast else (None, 2)
    say("evaluating the teacher at " + ", ".join(map(str, TEACHER_STEPS)) + " steps and the one-step student")
    t_res = {s: repeated_eval(teacher, n, repeats, evaluator=ev, steps=s) for s in TEACHER_STEPS}
    s_res = repeated_eval(student, n, repeats, evaluator=ev)
    floor = s_res["floor"]
    t16 = t_res[16]
    result = {
        "dataset": "digits", "machine": machine(), "teacher_run": str(teacher_path), "student_run": str(student_path),
        "feature_space": s_res["feature_space"], "evaluator_test_accuracy": ev.test_accuracy,
        "teacher_sampler": teacher.info["sampler"], "student_sampler": student.info["sampler"],
        "teacher_by_steps": {str(s): {**r["metrics"], "samples_per_s": r["samples_per_s"]} for s, r in t_res.items()},
        "student": {**s_res["metrics"], "samples_per_s": s_res["samples_per_s"]},
        "floor": floor,
        "speedup_vs_teacher_16": s_res["samples_per_s"] / t16["samples_per_s"],
        "n_per_repeat": s_res["n"], "repeats": repeats,
    }
    result["seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "metrics.json", result)

    comparison_grid(teacher, student, TEACHER_STEPS, out / "samples_teacher_vs_student.png")
    plot_quality_vs_steps(
        {"teacher (MaskGIT sampler)": (TEACHER_STEPS, [t_res[s]["metrics"]["fid"] for s in TEACHER_STEPS])},
        out / "fid_vs_steps.png", title="digits: teacher steps vs one-step DiMO student",
        hlines={"DiMO student (1 step)": s_res["metrics"]["fid"], "real floor (test vs train)": floor["fid"]})
    headers = ["sampler", "steps", "FID", "precision", "recall", "class acc", "samples/s"]
    rows = [[f"teacher (CFG {teacher.info['sampler']['cfg']}, {teacher.info['sampler']['cfg_ramp']})", s,
             r["metrics"]["fid"], r["metrics"]["precision"], r["metrics"]["recall"], r["metrics"]["class_acc"],
             r["samples_per_s"]] for s, r in t_res.items()]
    rows.append(["DiMO student", 1, s_res["metrics"]["fid"], s_res["metrics"]["precision"],
                 s_res["metrics"]["recall"], s_res["metrics"]["class_acc"], s_res["samples_per_s"]])
    rows.append(["real data (test vs train)", "–", floor["fid"], floor["precision"], floor["recall"],
                 floor["class_acc"], "–"])
    report = write_report(out / "report.html", "fewstep demo: DiMO on digits", [
        ("Result", [
            f"One-step student vs its teacher: FID {s_res['metrics']['fid']:.2f} vs {t16['metrics']['fid']:.2f} "
            f"(teacher at 16 steps); {result['speedup_vs_teacher_16']:.1f}x the teacher's 16-step samples/s. "
            f"The demo distills for {student.config['train']['steps']} steps; `fewstep distill dimo` with the digits "
            f"preset runs {preset('dimo', 'digits')['train']['steps']} (docs/BENCHMARKS.md has that student).",
            ("table", headers, rows),
            f"FID, precision and recall are computed in the 128-d features of a classifier fewstep trains on digits "
            f"(test accuracy {ev.test_accuracy:.3f}), not Inception; n = {s_res['n']} samples per repeat, mean of "
            f"{repeats} seed blocks. Machine: {machine_line(result['machine'])}.",
        ]),
        ("Samples (same classes and seeds in every row)", [
            "Rows: teacher at " + ", ".join(map(str, TEACHER_STEPS)) + " steps, then the one-step DiMO student. "
            "Columns: classes 0-9, two seeds each.",
            ("img", out / "samples_teacher_vs_student.png"),
        ]),
        ("Quality vs steps", [("img", out / "fid_vs_steps.png", 640)]),
    ])
    say(f"demo done in {result['seconds'] / 60:.1f} min: {report}  (metrics: {out / 'metrics.json'})")
    return result

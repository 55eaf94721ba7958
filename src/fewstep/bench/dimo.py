"""`fewstep bench dimo`: the one-step student against its teacher, speed, and ablations.

Ablations (each a separate short distillation, same seed and budget): r_init, divergence, sigma_init,
guidance (the teacher's CFG and temperature during distillation); plus a sampling-temperature sweep of
the main student (no retraining) and the teacher sampled as the student is taught to (random order,
the distillation CFG and temperature, the auxiliary model's label smoothing removed).
"""

from __future__ import annotations

from pathlib import Path

from fewstep.bench.common import (command_line, comparable_floor, machine, machine_line, markdown_table, measure_speed,
                                  parse_steps, repeated_eval, slug, write_outputs)
from fewstep.bench.teacher import ensure_teacher
from fewstep.errors import FewstepError
from fewstep.runlog import say

ABLATIONS = {
    "r_init": [("r_init=0.0", ["method.r_init=0.0"]), ("r_init=0.2", ["method.r_init=0.2"]),
               ("r_init=0.4", ["method.r_init=0.4"]), ("r_init=0.6", ["method.r_init=0.6"]),
               ("r_init=0.8", ["method.r_init=0.8"]), ("r_init=1.0", ["method.r_init=1.0"])],
    "divergence": [("FKL", ["method.divergence=fkl"]), ("RKL", ["method.divergence=rkl"]),
                   ("Jeffrey beta=-0.2", ["method.divergence=jeffrey", "method.beta=-0.2"]),
                   ("Jeffrey beta=0.5", ["method.divergence=jeffrey", "method.beta=0.5"]),
                   ("Jensen-Shannon", ["method.divergence=js"]), ("squared Hellinger", ["method.divergence=hellinger"])],
    "sigma_init": [("sigma_init=0.0", ["method.sigma_init=0.0"]), ("sigma_init=0.1", ["method.sigma_init=0.1"]),
                   ("sigma_init=0.3", ["method.sigma_init=0.3"]), ("sigma_init=0.6", ["method.sigma_init=0.6"])],
    "guidance": [(label, [f"method.teacher_cfg={cfg}", f"method.teacher_cfg_ramp={ramp}", f"method.teacher_temp={temp}"])
                 for label, cfg, ramp, temp in [("teacher CFG 2.0 (official)", 2.0, "constant", 1.0),
                                                ("teacher CFG 1.25", 1.25, "constant", 1.0),
                                                ("teacher CFG 1.25 ramped", 1.25, "linear", 1.0),
                                                ("teacher CFG 1.0", 1.0, "constant", 1.0),
                                                ("teacher CFG 1.25, T 0.9", 1.25, "constant", 0.9),
                                                ("teacher CFG 1.25, T 0.8", 1.25, "constant", 0.8)]],
}
TEMPERATURES = [0.1, 0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 4.0]  # paper App. D sweeps upwards; short runs prefer < 1


def _distill(teacher_path: str, data: dict, out: Path, overrides: list[str]) -> Path:
    from fewstep.cli.commands import train_run

    return train_run("dimo", data, str(out), overrides=overrides, extra_method={"teacher": str(teacher_path)})


def _row(label, res):
    m = res["metrics"]
    return [label, m["fid"], m["precision"], m["recall"], m["class_acc"], res["samples_per_s"]]


def bench_dimo(args) -> dict:
    from fewstep.cli.commands import resolve_device
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.runs import load_run
    from fewstep.viz import plot_quality_vs_steps

    out = Path(args.out or f"runs/bench_dimo_{args.data}")
    teacher_path = ensure_teacher(args.data, args.data_dir, out, args.teacher, args.tokenizer)
    extra = list(args.overrides or [])
    device = resolve_device(args.device)
    teacher = load_run(teacher_path, device=device)
    t_data = teacher.config["data"]
    student_path = Path(args.student) if args.student else _distill(teacher_path, t_data, out / "student", extra)
    student = load_run(student_path, device=device)
    if student.method_name != "dimo":
        raise FewstepError(f"'{student_path}' is a '{student.method_name}' run, not a DiMO student")
    ev = get_evaluator(teacher.info["dataset"], t_data.get("data_dir"))
    n, rep = args.n, args.repeats
    steps_list = parse_steps(args.steps)
    t_cfg = float(teacher.info["sampler"]["cfg"])
    say("student (1 step) and teacher at " + ",".join(map(str, steps_list)) + " steps")
    s_res = repeated_eval(student, n, rep, evaluator=ev)
    t_res = {s: repeated_eval(teacher, n, rep, evaluator=ev, steps=s) for s in steps_list}
    # The distribution DiMO matches: the teacher's own conditionals at the distillation guidance and
    # temperature, unmasked in random order over as many steps as positions - not the confidence sampler above.
    # The auxiliary model learns the student's samples with label smoothing eps, so where aux = teacher the
    # student's conditionals are the teacher's with that smoothing removed.
    sm = student.config["method"]
    ramp, eps = sm.get("teacher_cfg_ramp", "constant"), sm["aux_label_smoothing"]
    target_label = (f"teacher as distilled: random order, {teacher.info['seq_len']} steps, "
                    f"CFG {sm['teacher_cfg']} {ramp}, T {sm['teacher_temp']}, smoothing {eps} removed")
    target_res = repeated_eval(teacher, n, rep, evaluator=ev, steps=teacher.info["seq_len"], remask="random",
                               cfg=sm["teacher_cfg"], cfg_ramp=ramp, temperature=sm["teacher_temp"], desmooth=eps)
    # speed in one process, same batch size: one-step student vs the teacher's 16-step CFG sampler
    speed_cfg = t_cfg if t_cfg != 1.0 else 2.0  # a guided sampler: two network evaluations per step
    n_speed = min(n or 500, 500)
    say(f"speed: median of {args.speed_timings} timings of {n_speed} samples each")
    speed_t = measure_speed(teacher, n_speed, args.speed_timings, steps=16, cfg=speed_cfg)
    speed_s = measure_speed(student, n_speed, args.speed_timings)
    speedup = speed_s["gen_samples_per_s"] / speed_t["gen_samples_per_s"]
    speedup_pixels = speed_s["samples_per_s"] / speed_t["samples_per_s"]
    temps = [(tau, repeated_eval(student, n, rep, evaluator=ev, temperature=tau)) for tau in TEMPERATURES]

    ablations: dict[str, list] = {}
    chosen = [a for a in (args.ablations or "").split(",") if a]
    unknown = set(chosen) - set(ABLATIONS)
    if unknown:
        raise FewstepError(f"unknown ablation(s) {sorted(unknown)}; choose from {', '.join(ABLATIONS)}")
    for group in chosen:
        ablations[group] = []
        for label, over in ABLATIONS[group]:
            folder = out / "ablations" / slug(label)
            say(f"ablation {group}: {label}")
            short = [f"train.steps={args.ablation_steps}", "finetune.train.steps=0"]
            run_dir = _distill(teacher_path, t_data, folder, extra + over + short)
            res = repeated_eval(load_run(run_dir, device=device), n, rep, evaluator=ev)
            ablations[group].append({"label": label, "overrides": over, **res,
                                     "final_logs": _final_logs(run_dir)})

    m = machine()
    command = command_line(f"fewstep bench dimo --data {args.data}")
    data = {"benchmark": "dimo", "dataset": teacher.info["dataset"], "machine": m, "command": command,
            "teacher": str(teacher.path), "student": str(student.path), "student_config": student.config["method"],
            "train": student.config["train"], "student_result": s_res, "teacher_results": {str(k): v for k, v in t_res.items()},
            "teacher_as_distilled": {"label": target_label, **target_res},
            "speed": {"student": speed_s, "teacher16_cfg": speed_t, "speedup": speedup,
                      "speedup_to_pixels": speedup_pixels, "teacher_cfg": speed_cfg},
            "temperature_sweep": [{"temperature": t, **r} for t, r in temps], "ablations": ablations, "floor": s_res["floor"]}
    floor = comparable_floor(s_res)
    headers = ["sampler", "FID", "precision", "recall", "class acc", "samples/s"]
    rows = [_row(f"teacher {s} steps (CFG {t_cfg})", r) for s, r in t_res.items()]
    rows.append(_row(target_label, target_res))
    rows.append(_row("DiMO student, 1 step", s_res))
    if floor:
        rows.append(["real data (test vs train)", floor["fid"], floor["precision"], floor["recall"], floor["class_acc"],
                     None])
    parts = [f"### DiMO on `{data['dataset']}`", "", f"Machine: {machine_line(m)}.", f"Command: `{command}`", "",
             markdown_table(headers, rows), "",
             f"Speed (same process, {n_speed} samples, median of {args.speed_timings} timings): student "
             f"{speed_s['gen_samples_per_s']:.1f} samples/s vs teacher 16-step CFG {speed_cfg} "
             f"{speed_t['gen_samples_per_s']:.1f} samples/s = **{speedup:.1f}x**; to pixels (decoding included) "
             f"{speed_s['samples_per_s']:.1f} vs {speed_t['samples_per_s']:.1f} = {speedup_pixels:.1f}x.", "",
             "Sampling temperature of the student (tau_gen, logits / tau):", "",
             markdown_table(["tau_gen", "FID", "precision", "recall", "class acc", "samples/s"],
                            [_row(t, r) for t, r in temps])]
    for group, items in ablations.items():
        parts += ["", f"Ablation `{group}` ({args.ablation_steps} steps each):", "",
                  markdown_table(headers, [_row(a["label"], a) for a in items])]
    parts += ["", f"FID/precision/recall in the features of fewstep's {data['dataset']} classifier (not Inception), "
              f"n = {s_res['n']} per setting, mean of {rep} seed block(s)."]
    md = "\n".join(parts)
    plot_quality_vs_steps({f"teacher (CFG {t_cfg})": (steps_list, [t_res[s]["metrics"]["fid"] for s in steps_list])},
                          out / "dimo_fid_vs_steps.png", title=f"DiMO on {data['dataset']}",
                          hlines={"DiMO student (1 step)": s_res["metrics"]["fid"],
                                  **({"real floor": floor["fid"]} if floor else {})})
    from fewstep.demo import comparison_grid

    comparison_grid(teacher, student, [s for s in steps_list if s <= 16], out / "dimo_samples.png")
    write_outputs(out, "bench_dimo", data, md)
    print(md)
    return data


def _final_logs(run_dir: Path) -> dict:
    import json

    stats = Path(run_dir) / "stats.jsonl"
    lines = stats.read_text().splitlines() if stats.is_file() else []
    return json.loads(lines[-1]) if lines else {}



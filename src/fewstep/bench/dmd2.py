"""`fewstep bench dmd2` and `fewstep bench msd`: continuous teachers and their one/few-step students.

dmd2: the EDM teacher's FID vs NFE (Heun), then DMD2 variants: 1 step with / without GAN, critic ratio
      1 vs 5, and a 4-step generator with backward simulation, as published, with fewstep's per-step critic
      and DM levels, and with its later steps also anchored on the teacher's ODE (docs/BENCHMARKS.md).
msd:  K = 1, 2, 4 same-size students and K = 1, 4 smaller students (TSM first), same steps as DMD2; plus
      samples/s and parameters of each. By default each of K students gets batch B/K, so MSD spends the
      same total compute as one DMD2 student and sees as many images per class (the paper's Table 3
      "K = 4, B = 32" vs "K = 1, B = 128" comparison); --per-student-batch keeps B per student (its K scan).
--student RUN (either bench) scores existing students against the teacher instead of distilling the variants.
"""

from __future__ import annotations

from pathlib import Path

from fewstep.bench.common import (command_line, comparable_floor, machine, machine_line, markdown_table, measure_speed,
                                  parse_steps, repeated_eval, shipped_teacher, slug, write_outputs)
from fewstep.errors import FewstepError
from fewstep.runlog import say

DMD2_VARIANTS = [
    ("DMD2 1-step, GAN, critic ratio 5", "dmd2", []),
    ("DMD2 1-step, no GAN, critic ratio 5", "dmd2", ["method.gan=false"]),
    ("DMD2 1-step, GAN, critic ratio 1", "dmd2", ["method.critic_updates=1"]),
    ("DMD2 4-step, GAN, backward simulation", "dmd2", ["method.gen_steps=4"]),
    ("DMD2 4-step, step critic, DM below input", "dmd2",
     ["method.gen_steps=4", "method.step_critic=true", "method.dm_below_input=true"]),
    ("DMD2 4-step, step critic, DM below input, ODE anchor", "dmd2",
     ["method.gen_steps=4", "method.step_critic=true", "method.dm_below_input=true", "method.anchor_weight=1.0"]),
]
MSD_VARIANTS = [
    ("MSD K=1 (= DMD2)", "msd", ["method.students=1"]),
    ("MSD K=2", "msd", ["method.students=2"]),
    ("MSD K=4", "msd", ["method.students=4"]),
    ("MSD K=1, smaller student + TSM", "msd", ["method.students=1", "method.student_channels=[16,32]"]),
    ("MSD K=4, smaller students + TSM", "msd", ["method.students=4", "method.student_channels=[16,32]"]),
]


def select_variants(variants: list, only: str | None) -> list:
    """--only: a whole label picks exactly that variant, else each comma-separated item picks every label holding it."""
    if not only:
        return variants
    exact = [v for v in variants if v[0] == only]
    chosen = exact or [v for v in variants if any(o.strip() in v[0] for o in only.split(","))]
    if not chosen:
        raise FewstepError(f"--only '{only}' matches no variant; the labels are: " + "; ".join(v[0] for v in variants))
    return chosen


def ensure_edm_teacher(data: str, data_dir: str | None, out: Path, teacher: str | None) -> str:
    from fewstep.cli.commands import train_run

    if teacher:
        return teacher
    if not data_dir and (shipped := shipped_teacher(f"edm_{data}")):
        return str(shipped)
    return str(train_run("edm", {"name": data, "data_dir": data_dir}, str(out / "teacher")))


def _msd_batch(per_student_batch: bool, data: dict, overrides: list[str]) -> list[str]:
    """train.batch_size = B / K for K students (equal total compute), unless --per-student-batch."""
    from fewstep.experiment import build_experiment

    if per_student_batch:
        return []
    exp = build_experiment("msd", data, None, overrides)
    k, b = exp.method.cfg.students, exp.train.batch_size
    if b % k:
        raise FewstepError(f"batch size {b} is not divisible by {k} students; pass --per-student-batch or "
                         "train.batch_size=<multiple of K>")
    return [f"train.batch_size={b // k}"]


def load_student(path: str, dataset: str, device):
    """An existing DMD2/MSD run (or checkpoint) of the bench's dataset, to score instead of distilling one."""
    from fewstep.runs import load_run

    run = load_run(path, device=device)
    if run.method_name not in ("dmd2", "msd") or run.info["dataset"] != dataset:
        raise FewstepError(f"--student '{path}' is a '{run.method_name}' run on {run.info['dataset']}, not a DMD2 "
                           f"or MSD student on {dataset}; pass one distilled on {dataset}")
    return run


def _params(run) -> int:
    nets = [m for n, m in run.nets.items() if n.startswith("generator")]
    return sum(p.numel() for p in nets[0].parameters()) if nets else 0


def _speedups(t_rows: list[dict], results: list[dict], metric: str) -> str:
    """Each student's samples/s over those of the teacher's best-scoring step count."""
    best = min(t_rows, key=lambda r: r["metrics"][metric])
    base = best["speed"]["samples_per_s"]
    return "".join(f" {r['label']}: {r['speed']['samples_per_s'] / base:.1f}x the samples/s of the teacher's "
                   f"best {metric} (Heun {best['steps']} steps)." for r in results)


def bench_continuous(args, which: str) -> dict:
    from fewstep.cli.commands import resolve_device, train_run
    from fewstep.methods.edm import require_edm_teacher
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.runs import load_run
    from fewstep.viz import plot_quality_vs_steps

    out = Path(args.out or f"runs/bench_{which}_{args.data}")
    variants = DMD2_VARIANTS if which == "dmd2" else MSD_VARIANTS
    chosen = [] if args.student else select_variants(variants, args.only)  # fail before any work
    teacher_path = ensure_edm_teacher(args.data, args.data_dir, out, args.teacher)
    device = resolve_device(args.device)
    teacher = require_edm_teacher(teacher_path, device=device)
    ds_name = teacher.info["dataset"]
    ev = None if teacher.info["kind"] == "points" else get_evaluator(ds_name, teacher.config["data"].get("data_dir"))
    n, rep = args.n, args.repeats
    metric = "energy" if ev is None else "fid"
    students = [(path, load_student(path, ds_name, device)) for path in args.student or []]  # fail before any work
    # samples/s apart from scoring: the median of several timings of the same samples, on the same batch size
    timed = lambda run, **opt: measure_speed(run, min(n or 500, 500), args.speed_timings, **opt)  # noqa: E731
    t_rows = []
    for s in parse_steps(args.steps):
        say(f"teacher: Heun {s} steps")
        r = repeated_eval(teacher, n, rep, evaluator=ev, steps=s, solver="heun")
        t_rows.append({"steps": s, "nfe": 2 * s - 1, **r, "speed": timed(teacher, steps=s, solver="heun")})
    results, user_over = [], list(args.overrides or [])
    for path, run in students:
        say(f"student {path}")
        nfe = len(run.info["gen_sigmas"])
        results.append({"label": f"{run.method_name.upper()} {nfe}-step: {path}", "method": run.method_name,
                        "overrides": [], "run": str(run.path), "params": _params(run), "nfe": nfe,
                        **repeated_eval(run, n, rep, evaluator=ev), "speed": timed(run)})
    for label, method, over in chosen:
        say(label)
        if method == "msd":
            over = over + _msd_batch(args.per_student_batch, teacher.config["data"], user_over + over)
        run_dir = train_run(method, teacher.config["data"], str(out / slug(label)), overrides=user_over + over,
                            extra_method={"teacher": str(teacher_path)})
        run = load_run(run_dir, device=device)
        results.append({"label": label, "method": method, "overrides": over, "run": str(run_dir),
                        "params": _params(run), "nfe": len(run.info["gen_sigmas"]),
                        **repeated_eval(run, n, rep, evaluator=ev), "speed": timed(run)})
    m = machine()
    command = command_line(f"fewstep bench {which} --data {args.data}")
    data = {"benchmark": which, "dataset": ds_name, "machine": m, "command": command, "teacher": str(teacher.path),
            "teacher_params": sum(p.numel() for p in teacher.nets["model"].parameters()),
            "teacher_by_steps": t_rows, "students": results}
    if ev is not None:
        data["floor"] = t_rows[0]["floor"]
        floor = comparable_floor(t_rows[0])
        heads = ["sampler", "NFE", "params", "FID", "precision", "recall", "class acc", "samples/s"]
        row = lambda lab, nfe, p, r: [lab, nfe, p, r["metrics"]["fid"], r["metrics"]["precision"],  # noqa: E731
                                      r["metrics"]["recall"], r["metrics"]["class_acc"], r["speed"]["samples_per_s"]]
    else:
        floor = None
        heads = ["sampler", "NFE", "params", "energy distance", "precision", "class acc", "modes hit", "samples/s"]
        row = lambda lab, nfe, p, r: [lab, nfe, p, r["metrics"]["energy"], r["metrics"]["precision"],  # noqa: E731
                                      r["metrics"]["class_acc"], r["metrics"]["modes_hit"], r["speed"]["samples_per_s"]]
    batch_note = "" if which != "msd" else (
        " Each MSD student trains with the full batch B (K x the compute of DMD2)." if args.per_student_batch
        else " Each MSD student trains with batch B/K (equal total compute to DMD2).")
    tp = data["teacher_params"]
    rows = [row(f"EDM teacher, Heun {r['steps']} steps", r["nfe"], tp, r) for r in t_rows]
    rows += [row(r["label"], r["nfe"], r["params"], r) for r in results]
    if floor:
        rows.append(["real data (test vs train)", "–", "–", floor["fid"], floor["precision"], floor["recall"],
                     floor["class_acc"], None])
    md = "\n".join([f"### {which.upper()} on `{ds_name}`", "", f"Machine: {machine_line(m)}.", f"Command: `{command}`",
                    "", markdown_table(heads, rows), "",
                    (f"FID/precision/recall in the features of fewstep's {ds_name} classifier (not Inception), "
                     if ev is not None else "Exact 2-D mixture metrics, ")
                    + f"n = {t_rows[0]['n']} per setting, mean of {rep} seed block(s). params = one student's "
                      "generator (MSD: each of K students; a sample uses one)." + batch_note
                    + f" samples/s: the median of {args.speed_timings} timed generations of the same "
                      f"{t_rows[0]['speed']['n']} samples." + _speedups(t_rows, results, metric)])
    series = {"EDM teacher (Heun)": ([r["nfe"] for r in t_rows], [r["metrics"][metric] for r in t_rows])}
    hl = {r["label"]: r["metrics"][metric] for r in results}
    if floor:
        hl["real floor"] = floor["fid"]
    plot_quality_vs_steps(series, out / f"{which}_{metric}_vs_nfe.png", ylabel=metric,
                          title=f"{which.upper()} on {ds_name}", hlines=hl, xlabel="network evaluations (NFE)")
    write_outputs(out, f"bench_{which}", data, md)
    print(md)
    return data

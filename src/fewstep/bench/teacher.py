"""`fewstep bench teacher`: quality and speed of the masked teacher at 1..32 steps, with and without CFG."""

from __future__ import annotations

from pathlib import Path

import torch

from fewstep.bench.common import (command_line, comparable_floor, machine, machine_line, markdown_table, parse_steps,
                                  repeated_eval, shipped_teacher, write_outputs)
from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.runlog import say


def ensure_teacher(data: str, data_dir: str | None, out: Path, teacher: str | None,
                   tokenizer: str | None) -> str:
    """An existing teacher run, the shipped one for digits, or one trained with the dataset's preset (tokenizer
    first if it needs one)."""
    from fewstep.cli.commands import tokenizer_report, train_run

    if teacher:
        return teacher
    if data == "digits" and not data_dir and not tokenizer and (shipped := shipped_teacher("digits")):
        return str(shipped)
    ds = load_dataset(data, data_dir)
    if ds.default_tokenizer == "vq" and not tokenizer:
        tokenizer = str(train_run("vq", {"name": data, "data_dir": data_dir}, str(out / "tokenizer")))
        tokenizer_report(Path(tokenizer))
    return str(train_run("maskgit", {"name": data, "data_dir": data_dir, "tokenizer": tokenizer},
                         str(out / "teacher")))


def steps_grid(run, steps_list: list[int], cfg: float, path: Path, per_class: int = 1, **options) -> None:
    """Rows = step counts, columns = classes; the same seeds in every row."""
    from fewstep.metrics.evaluate import decoder_for
    from fewstep.viz import save_grid

    ds, tok = decoder_for(run)
    c = run.info["num_classes"]
    labels = torch.arange(c).repeat(per_class)
    seeds = list(range(len(labels)))
    dev = next(iter(run.nets.values())).parameters().__next__().device
    rows = [tok.decode(run.generate(labels.to(dev), seeds, steps=s, cfg=cfg, **options).cpu()) for s in steps_list]
    if rows[0] is not None:
        save_grid(torch.cat(rows), path, nrow=len(labels))


def bench_teacher(args) -> dict:
    from fewstep.cli.commands import resolve_device
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.runs import load_run
    from fewstep.viz import plot_quality_vs_steps

    steps_list = parse_steps(args.steps)
    out = Path(args.out or f"runs/bench_teacher_{args.data}")
    teacher = ensure_teacher(args.data, args.data_dir, out, args.teacher, args.tokenizer)
    run = load_run(teacher, device=resolve_device(args.device))
    if run.method_name != "maskgit":
        raise FewstepError(f"'{teacher}' is a '{run.method_name}' run, not a masked teacher")
    ds = load_dataset(run.info["dataset"], run.config["data"].get("data_dir"))
    ev = get_evaluator(ds.name, run.config["data"].get("data_dir")) if ds.exact is None else None
    cfg_on = float(args.cfg if args.cfg is not None else run.info["sampler"]["cfg"])
    cfgs = [1.0] if cfg_on == 1.0 else [1.0, cfg_on]
    # sampler settings for every row besides steps and CFG (default: the teacher's own)
    options = {k: getattr(args, k) for k in ("remask", "desmooth") if getattr(args, k, None) is not None}
    results = []
    for s in steps_list:
        for c in cfgs:
            say(f"teacher: {s} steps, cfg {c}")
            res = repeated_eval(run, args.n, args.repeats, evaluator=ev, steps=s, cfg=c, **options)
            results.append({"steps": s, "cfg": c, **res})
    m = machine()
    command = command_line(f"fewstep bench teacher --data {args.data}")
    data = {"benchmark": "teacher", "dataset": ds.name, "teacher": str(run.path), "machine": m,
            "command": command, "sampler": {**run.info["sampler"], **options}, "results": results}
    if ds.exact is None:
        headers = ["steps", "CFG", "FID", "precision", "recall", "class acc", "samples/s"]
        rows = [[r["steps"], r["cfg"], r["metrics"]["fid"], r["metrics"]["precision"], r["metrics"]["recall"],
                 r["metrics"]["class_acc"], r["samples_per_s"]] for r in results]
        data["floor"] = results[0]["floor"]
        floor = comparable_floor(results[0])
        sampler = ", ".join(f"{k} {v}" for k, v in {**run.info["sampler"], **options}.items()
                            if k in ("remask", "desmooth", "cfg_ramp", "gumbel_temp") and v)
        notes = (f"Sampler: {sampler}. FID/precision/recall in the features of fewstep's {ds.name} classifier (not Inception; "
                 f"its test accuracy {ev.test_accuracy:.3f}), n = {results[0]['n']} per setting"
                 f"{'' if args.repeats == 1 else f', mean of {args.repeats} seed blocks'}."
                 + (f" Real floor (test vs train split, same n): FID {floor['fid']:.2f}, precision "
                    f"{floor['precision']:.3f}, recall {floor['recall']:.3f}, class acc {floor['class_acc']:.3f}."
                    if floor else ""))
        series = {f"CFG {c}": ([r["steps"] for r in results if r["cfg"] == c],
                               [r["metrics"]["fid"] for r in results if r["cfg"] == c]) for c in cfgs}
        plot_quality_vs_steps(series, out / "teacher_fid_vs_steps.png", title=f"teacher on {ds.name}",
                              hlines={"real floor (test vs train)": floor["fid"]} if floor else None)
        steps_grid(run, steps_list, cfg_on, out / "teacher_steps_grid.png", **options)
    else:
        headers = ["steps", "CFG", "pair KL", "adjacent KL", "unigram KL", "NLL gap", "samples/s"]
        rows = [[r["steps"], r["cfg"], r["metrics"]["pair_kl"], r["metrics"]["adjacent_kl"],
                 r["metrics"]["unigram_kl"], r["metrics"]["nll_gap"], r["samples_per_s"]] for r in results]
        notes = "Exact metrics against the known Markov-chain mixture (KL of empirical vs exact marginals)."
    md = "\n".join([f"### Teacher on `{ds.name}`", "", f"Machine: {machine_line(m)}.", f"Command: `{command}`", "",
                    markdown_table(headers, rows), "", notes])
    write_outputs(out, "bench_teacher", data, md)
    print(md)
    return data

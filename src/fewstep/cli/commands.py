"""Implementations of the CLI verbs (kept apart from argument parsing so imports stay lazy)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fewstep.errors import FewstepError
from fewstep.runlog import say


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FewstepError("--device cuda but no CUDA device is visible; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise FewstepError(f"--device must be cpu, cuda or auto, not '{name}'")
    return torch.device(name)


def train_run(method: str, data: dict, out: str | None, config: str | None = None,
              overrides: list[str] | None = None, fresh: bool = False, dry_run: bool = False,
              extra_method: dict | None = None, hooks=None) -> Path:
    """Train into `out`. Where the config has finetune sections, its runs form a chain, each started from the one
    before it: the first goes to <out>/base, the middle ones to <out>/stage2, <out>/stage3 ..., and the last to
    <out>: the folder named is always the final model."""
    from fewstep.experiment import build_experiment
    from fewstep.trainer import Trainer

    exps = [build_experiment(method, data, config, overrides, extra_method)]
    out_dir = Path(out or f"runs/{method}_{exps[0].record['data']['name']}")
    folders = [out_dir / "base"]
    while exps[-1].finetune:
        exps.append(build_experiment(method, data, config, overrides,
                                     {**(extra_method or {}), "init_from": str(folders[-1])}, stage=len(exps)))
        folders.append(out_dir / f"stage{len(exps)}")
    folders[-1] = out_dir
    for i, (stage, folder) in enumerate(zip(exps, folders)):
        if dry_run:
            print(json.dumps(stage.record, indent=2))
            continue
        stage.method.full_config = stage.record
        if i:
            changes = _flat({k: v for k, v in exps[i - 1].finetune.items() if k != "finetune"})
            later = "" if i == len(exps) - 1 else " and the ones after it"
            say(f"finetuning from {folders[i - 1]} ({', '.join(changes)}; {'finetune.' * i}train.steps=0 skips "
                f"this stage{later})")
        say(f"training '{method}' on '{stage.record['data']['name']}' into {folder}")
        Trainer(stage.method, stage.train, folder, stage.record, hooks=hooks).fit(fresh=fresh)
    return out_dir


def _flat(tree: dict, prefix: str = "") -> list[str]:
    """{'train': {'lr': 1e-4}} -> ['train.lr=0.0001']"""
    out = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"]
    return out


def _eval_hooks(args):
    from fewstep.hooks import eval_hook

    return [(args.eval_every, eval_hook())] if getattr(args, "eval_every", 0) > 0 else None


def _data_flags(args) -> dict:
    return {"name": args.data, "data_dir": args.data_dir, "tokenizer": args.tokenizer}


def cmd_train(args) -> int:
    method = args.kind if args.what == "teacher" else "vq"
    out = train_run(method, _data_flags(args), args.out, args.config, args.overrides, args.fresh, args.dry_run,
                    hooks=_eval_hooks(args) if method != "vq" else None)
    if args.dry_run:
        return 0
    if method == "vq":
        report = tokenizer_report(out)
        print(json.dumps(report, indent=2))
    say(f"done: {out}")
    return 0


def distill_run(method: str, teacher: str, out: str | None, config: str | None = None,
                overrides: list[str] | None = None, fresh: bool = False, dry_run: bool = False, hooks=None) -> Path:
    """Train `method` on the teacher run's dataset into `out` (default runs/<method>_<data>)."""
    from fewstep.checkpoint import read_checkpoint_json, resolve_checkpoint

    ckpt = resolve_checkpoint(teacher)
    t_config, _ = read_checkpoint_json(ckpt)
    root = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    out = out or f"runs/{method}_{t_config['data']['name']}"
    return train_run(method, t_config["data"], out, config, overrides, fresh, dry_run,
                     extra_method={"teacher": str(root)}, hooks=hooks)


def cmd_distill(args) -> int:
    out = distill_run(args.method, args.teacher, args.out, args.config, args.overrides, args.fresh, args.dry_run,
                      hooks=_eval_hooks(args))
    if not args.dry_run:
        say(f"done: {out}  (next: fewstep eval --run {out}; fewstep sample --run {out})")
    return 0


def tokenizer_report(run_dir: Path) -> dict:
    """Reconstruction quality of a VQ tokenizer on the test split: FID of reconstructions vs the train split."""
    from fewstep.checkpoint import write_json_atomic
    from fewstep.metrics.evaluator import get_evaluator
    from fewstep.runs import load_run
    from fewstep.tokenizers import VQTokenizer
    from fewstep.viz import save_grid

    tok = VQTokenizer(run_dir)
    run = load_run(run_dir)
    ev = get_evaluator(tok.dataset, run.config["data"].get("data_dir"))
    ds = ev.dataset
    codes = tok.encode(ds.test_images)
    recon = tok.decode(codes)
    rec = ev.metrics(recon, ds.test_labels)
    floor = ev.real_floor()
    used = int(codes.unique().numel())
    report = {
        "dataset": ds.name, "grid": list(tok.grid), "codebook_size": tok.vocab_size, "codes_used_test": used,
        "recon_mse": float(((recon - ds.test_images) ** 2).mean()), "recon": rec, "floor": floor,
        "feature_space": "fewstep classifier features (not Inception)",
    }
    write_json_atomic(Path(run_dir) / "recon.json", report)
    pairs = torch.stack([ds.test_images[:20], recon[:20]], 1).flatten(0, 1)
    save_grid(pairs, Path(run_dir) / "recon.png", nrow=10)
    return report


def _labels_for(args, num_classes: int, n: int) -> torch.Tensor:
    if args.classes:
        try:
            cls = [int(c) for c in str(args.classes).split(",") if c.strip()]
        except ValueError:
            raise FewstepError(f"--classes must be comma-separated integers, got '{args.classes}'") from None
        bad = [c for c in cls if not 0 <= c < num_classes]
        if bad:
            raise FewstepError(f"class id(s) {bad} out of range; this run has classes 0..{num_classes - 1}")
        return torch.tensor(cls)[torch.arange(n) % len(cls)]
    return torch.arange(n) % num_classes


def run_root(run) -> Path:
    p = Path(run.path)
    return p.parent.parent if p.parent.name == "checkpoints" else p


def cmd_sample(args) -> int:
    from fewstep.checkpoint import write_tensors_atomic
    from fewstep.metrics.evaluate import decoder_for, generate
    from fewstep.runs import load_run
    from fewstep.samplers.noise import parse_seeds
    from fewstep.viz import save_grid, writable_suffixes

    if args.n < 1:
        raise FewstepError("--n must be at least 1")
    run = load_run(args.run, device=resolve_device(args.device))
    if not getattr(run.method_cls, "generative", True):
        raise FewstepError(f"'{args.run}' is a '{run.method_name}' run, which does not generate samples")
    scatter = run.info["kind"] == "points"
    if args.out and Path(args.out).suffix.lower() not in writable_suffixes(scatter):
        writer = "matplotlib" if scatter else "Pillow"
        raise FewstepError(f"--out '{args.out}' must be an image file ending in .png, .jpg or another suffix {writer} "
                           "writes")
    labels = _labels_for(args, run.info["num_classes"], args.n)
    try:
        seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.n))
    except ValueError:
        raise FewstepError(f"--seeds must look like 0-99 or 1,2,3, got '{args.seeds}'") from None
    if len(seeds) != args.n:
        raise FewstepError(f"--seeds gives {len(seeds)} seeds but --n is {args.n}")
    from fewstep.cli.main import sampler_options

    tokens, secs = generate(run, labels, seeds, **sampler_options(args))
    say(f"{args.n} samples in {secs:.2f}s ({args.n / max(secs, 1e-9):.1f} samples/s)")
    if args.tokens:
        write_tensors_atomic(args.tokens, {"tokens": tokens, "labels": labels})
        say(f"tokens -> {args.tokens}")
    ds, tok = decoder_for(run)
    images = tok.decode(tokens)
    out = Path(args.out) if args.out else run_root(run) / "samples.png"
    if scatter:
        from fewstep.viz import save_scatter

        save_scatter(tokens, labels, out, title=f"{run.method_name} samples")
        say(f"scatter -> {out}")
        return 0
    if images is None:  # token sequences without an image (synthetic data)
        if not args.tokens:
            print(tokens[: min(10, len(tokens))].tolist())
        return 0
    nrow = len(set(labels.tolist())) if not args.classes else min(args.n, 10)
    save_grid(images, out, nrow=max(1, min(nrow, args.n)))
    say(f"grid -> {out}")
    return 0


def cmd_eval(args) -> int:
    from fewstep.api import evaluate
    from fewstep.checkpoint import write_json_atomic
    from fewstep.cli.main import sampler_options
    from fewstep.runs import load_run

    if args.repeats < 1 or (args.n is not None and args.n < 2):  # before the run is loaded, in the flags' names
        raise FewstepError("--repeats must be >= 1 and --n >= 2")
    opts = sampler_options(args)
    if args.checkpoints:
        return eval_checkpoints(args, opts)
    if args.extend:
        return extend_eval_file(args, opts)
    run = load_run(args.run, device=resolve_device(args.device))
    about = {"run": str(run.path), "method": run.method_name, "sampler": {**run.info.get("sampler", {}), **opts}}
    if args.json:
        dest = Path(args.json)
    elif is_shipped(run_root(run)):
        dest = None
        say("not saved: the checkpoints shipped with fewstep stay unchanged; pass --json FILE to keep the result")
    else:
        dest = run_root(run) / "eval.json"
    res = evaluate(run, args.n, args.repeats, on_block=block_saver(dest, about), **opts)
    res.update(about)
    print(json.dumps(res, indent=2))
    if dest is not None:
        write_json_atomic(dest, res)
    return 0


def block_saver(dest: Path | None, about: dict):
    """A repeated eval's on_block: the blocks scored so far go to dest, so an interrupted eval keeps them and
    `--extend dest` goes on from there."""
    from fewstep.checkpoint import write_json_atomic

    if dest is None:
        return None

    told = False

    def save(partial: dict) -> None:
        nonlocal told
        if not told:
            say(f"  each block is saved to {dest} as it ends (interrupted: `--extend {dest}` goes on from there)")
            told = True
        write_json_atomic(dest, {**partial, **about})
    return save


def extend_eval_file(args, opts: dict) -> int:
    """Score more seed blocks for an earlier eval of the same run and settings, and rewrite it with every mean."""
    from fewstep.bench.common import extend_eval
    from fewstep.checkpoint import write_json_atomic
    from fewstep.metrics.paired import load_eval
    from fewstep.runs import load_run

    old = load_eval(args.extend)
    if args.n is not None and args.n != old["n"]:
        raise FewstepError(f"'{args.extend}' scored n = {old['n']} per block; drop --n (blocks pair only at one n)")
    sampler = old.get("sampler", {})
    changed = sorted(k for k, v in opts.items() if sampler.get(k) != v)
    if changed:
        raise FewstepError(f"'{args.extend}' was scored with sampler {sampler}; drop --{changed[0].replace('_', '-')} "
                           "(an extension uses the eval's own settings) or start a new eval")
    run = load_run(args.run, device=resolve_device(args.device))
    if Path(old["run"]).resolve() != Path(str(run.path)).resolve():
        raise FewstepError(f"'{args.extend}' scored the run '{old['run']}', not '{run.path}'; pass that --run")
    about = {"run": old["run"], "method": run.method_name, "sampler": sampler}
    dest = Path(args.json or args.extend)
    res = {**extend_eval(run, old, args.repeats, on_block=block_saver(dest, about), **sampler), **about}
    print(json.dumps(res, indent=2))
    write_json_atomic(dest, res)
    return 0


def eval_checkpoints(args, opts: dict) -> int:
    """Evaluate every saved checkpoint of a run not yet scored with these settings, one eval.jsonl line each."""
    from fewstep.api import evaluate
    from fewstep.checkpoint import saved_checkpoints
    from fewstep.hooks import append_eval_line
    from fewstep.runlog import read_jsonl
    from fewstep.runs import load_run

    root = Path(args.run)
    steps = saved_checkpoints(root / "checkpoints")
    if args.json or args.extend:
        raise FewstepError(f"--checkpoints appends to {root}/eval.jsonl; drop --json and --extend")
    if not steps:
        raise FewstepError(f"'{root}' has no checkpoints/step_* folders; --checkpoints takes a run folder")
    if is_shipped(root):
        raise FewstepError("the checkpoints shipped with fewstep stay unchanged; copy the run folder to evaluate it")
    log = root / "eval.jsonl"
    setting = {"n": args.n, "repeats": args.repeats, "sampler": opts}
    done = {r["step"] for r in read_jsonl(log) if all(r.get(k) == v for k, v in setting.items())}
    device = resolve_device(args.device)
    metric = "fid"
    for folder in steps:
        step = int(folder.name.removeprefix("step_"))
        if step in done:
            continue
        res = evaluate(load_run(folder, device=device), args.n, args.repeats, **opts)
        line = append_eval_line(root, step, res, **setting)  # at once: an interrupted sweep keeps what it scored
        print(json.dumps(line))
        metric = "fid" if "fid" in line else next(iter(res["metrics"]))
    say(f"{log}: draw it with `fewstep plot {root} --metric {metric} --out curve.png`")
    return 0


def is_shipped(folder: Path) -> bool:
    """A run inside the installed package (fewstep/assets), which a reader must not modify."""
    import fewstep

    return Path(fewstep.__file__).parent.resolve() in Path(folder).resolve().parents


def cmd_bench(args) -> int:
    if getattr(args, "speed_timings", 1) < 1:  # before any training or scoring
        raise FewstepError("--speed-timings must be >= 1 (the samples/s reported is the median of that many timings)")
    if args.what == "teacher":
        from fewstep.bench.teacher import bench_teacher

        bench_teacher(args)
    elif args.what == "dimo":
        from fewstep.bench.dimo import bench_dimo

        bench_dimo(args)
    else:
        from fewstep.bench.dmd2 import bench_continuous

        bench_continuous(args, args.what)
    return 0


def cmd_export(args) -> int:
    from fewstep.checkpoint import export_inference
    from fewstep.methods.msd import merge_student_runs

    out = export_inference(args.run[0], args.out) if len(args.run) == 1 else merge_student_runs(args.run, args.out)
    say(f"exported {out}")
    return 0


def _name_value(spec: str) -> tuple[str, float]:
    name, _, value = spec.rpartition("=")
    try:
        if name:
            return name, float(value)
    except ValueError:
        pass
    raise FewstepError(f"--hline '{spec}' must be NAME=VALUE, e.g. 'teacher 16 steps=19.1'")


def cmd_plot(args) -> int:
    from fewstep.runlog import read_curve
    from fewstep.viz import plot_quality_vs_steps

    labels = args.label or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise FewstepError(f"{len(labels)} --label for {len(args.runs)} runs; give one --label per run, in order")
    if args.smooth < 1:
        raise FewstepError(f"--smooth must be at least 1 (1 = raw values), not {args.smooth}")
    series = {}
    for label, run in zip(labels, args.runs):
        steps, values = read_curve(run, args.metric)
        windows = [values[max(0, i + 1 - args.smooth): i + 1] for i in range(len(values))]
        series[label] = (steps, [sum(w) / len(w) for w in windows])  # trailing mean: training losses are noisy
    hlines = dict(_name_value(spec) for spec in args.hline or [])
    out = plot_quality_vs_steps(series, args.out, ylabel=args.metric, title=args.title or "", hlines=hlines,
                                logy=args.logy, xlabel="training step", logx=False)
    say(f"plot -> {out}")
    return 0


def cmd_compare(args) -> int:
    from fewstep.checkpoint import write_json_atomic
    from fewstep.metrics.paired import load_eval, paired_difference, select_metrics

    base = load_eval(args.base)
    others = [(path, load_eval(path)) for path in args.others]
    rows = []
    for metric in select_metrics(args.metric, base):
        print(f"{metric}: other - base, block by block (± standard error); base {args.base}")
        for path, other in others:
            r = {"eval": path, **paired_difference(base, other, metric)}
            error = ("one block: no error estimate" if r["diff_se"] is None else
                     f"± {r['diff_se']:.4f}, per-block spread {r['diff_std']:.4f}, "
                     f"lower on {r['lower']} of {r['blocks']} blocks")
            print(f"  {r['other']:.4g} vs {r['base']:.4g}: {r['diff']:+.4f} ({error})  {r['eval']}")
            rows.append(r)
    if args.json:
        write_json_atomic(Path(args.json), {"base": args.base, "comparisons": rows})
    return 0


def cmd_demo(args) -> int:
    from fewstep.demo import run_demo

    run_demo(Path(args.out), fast=args.fast)
    return 0


def cmd_info(args) -> int:
    from fewstep.checkpoint import shipped_teacher_names
    from fewstep.data import DATASETS
    from fewstep.methods import METHODS
    from fewstep.models import MODELS
    from fewstep.presets import PRESETS

    print("methods:  " + ", ".join(sorted(METHODS)))
    print("datasets: " + ", ".join(sorted(DATASETS)))
    print("networks: " + ", ".join(sorted(MODELS)))
    print("presets:  " + ", ".join(f"{m}/{d}" for m, d in sorted(PRESETS)))
    print("teachers: " + ", ".join(shipped_teacher_names()) + "  (shipped; --teacher/--run take these names)")
    return 0


def dispatch(args) -> int:
    return {"train": cmd_train, "distill": cmd_distill, "sample": cmd_sample, "eval": cmd_eval,
            "compare": cmd_compare, "bench": cmd_bench, "export": cmd_export, "plot": cmd_plot, "demo": cmd_demo,
            "info": cmd_info}[args.command](args)

"""`fewstep` command line: train, distill, sample, eval, compare, bench, export, plot, demo, info."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see fewstep/__init__.py)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


REPEATS_HELP = ("independent seed blocks to average over; on small test splits (digits: 359) FID moves by 1-3 "
                "between blocks: compare models with --n 4000 --repeats 3 (or about 12 blocks at the default n). "
                "Block r gives every model the same noise (labels are class-balanced); the JSON keeps each block's FID "
                "(\"blocks\"), so two models can be compared block by block")


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler (defaults come from the run)")
    g.add_argument("--steps", type=int, help="sampling steps (multi-step samplers)")
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--cfg-ramp", choices=["constant", "linear"], help="guidance schedule over steps")
    g.add_argument("--cfg-interval", type=float, nargs=2, metavar=("LO", "HI"),
                   help="EDM teachers: guide only at noise levels LO < sigma <= HI (Kynkaanniemi et al. 2024)")
    g.add_argument("--temperature", type=float, help="softmax temperature (logits / T)")
    g.add_argument("--remask", choices=["confidence", "random"], help="MaskGIT re-masking rule")
    g.add_argument("--gumbel-temp", type=float, help="confidence noise temperature (annealed to 0)")
    g.add_argument("--top-k", type=int, help="sample only among the k most likely tokens")
    g.add_argument("--desmooth", type=float, metavar="EPS",
                   help="masked teachers: remove the label smoothing EPS they were trained with from their "
                        "predictions (DiMO's aux cancels it, so this is the distribution a student learns)")
    g.add_argument("--schedule", choices=["arccos", "cosine", "linear"], help="mask schedule of the sampler")
    g.add_argument("--solver", choices=["heun", "euler"], help="continuous teachers: ODE solver")
    g.add_argument("--noise-scale", type=float,
                   help="continuous runs: multiply the starting noise (a temperature; 1 = the trained prior)")
    g.add_argument("--sigma-scale", type=float,
                   help="EDM teachers: tell the denoiser sigma / K, so it removes less noise (1 = the trained model; "
                        "the real score DMD2's method.teacher_sigma_scale=K matches)")
    g.add_argument("--r-init", type=float, help="one-step generators: initial [M] ratio")
    g.add_argument("--sigma-init", type=float, help="one-step generators: embedding noise")


DISTILLERS = {
    "dimo": "Di[M]O: masked teacher -> one-step generator (arXiv 2503.15457)",
    "dmd2": "DMD2: EDM teacher -> one/few-step generator, distribution matching + GAN (arXiv 2405.14867)",
    "msd": "MSD: K one-step students, one per class group, DMD2 each (arXiv 2410.23274)",
}

SAMPLER_KEYS = ("steps", "cfg", "cfg_ramp", "temperature", "remask", "gumbel_temp", "top_k", "schedule",
                "desmooth", "r_init", "sigma_init", "solver", "noise_scale", "sigma_scale",
                "cfg_interval")


def sampler_options(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in SAMPLER_KEYS if getattr(args, k, None) is not None}


def add_train_flags(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    p.add_argument("--data", required=data_required, help="dataset: digits | fashion_mnist | mnist | synthetic")
    p.add_argument("--data-dir", help="folder with the dataset files (fashion_mnist IDX files)")
    p.add_argument("--tokenizer", help="'identity' or a tokenizer run folder (fashion_mnist / mnist)")
    add_run_flags(p, "method/data/train", "train.steps=2000 method.dim=128")


def add_run_flags(p: argparse.ArgumentParser, config_sections: str, example: str) -> None:
    """Flags of every command that trains into a run folder (train, distill)."""
    p.add_argument("--out", help="run folder (default runs/<method>_<data>); an existing run resumes")
    p.add_argument("--config", help=f"YAML file with {config_sections} sections")
    p.add_argument("--fresh", action="store_true", help="discard the run folder's checkpoints and start over")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps into <out>/eval.jsonl")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")


def add_bench_parser(sub, name: str, help_: str, tokenizer: bool = False, overrides: bool = True, speed: bool = True):
    p = sub.add_parser(name, help=help_)
    p.add_argument("--data", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--teacher", help="teacher run (default: the one shipped for digits, else train one with the preset into <out>/teacher)")
    if tokenizer:
        p.add_argument("--tokenizer", help="tokenizer run for fashion_mnist/mnist (default: train one)")
    p.add_argument("--out", help=f"output folder (default runs/bench_{name}_<data>)")
    p.add_argument("--n", type=int, help="samples per setting (default: test split size)")
    p.add_argument("--repeats", type=int, default=1, help=REPEATS_HELP)
    p.add_argument("--device", default="auto")
    if speed:
        p.add_argument("--speed-timings", type=int, default=5, help="timed generations; the speed is their median")
    if overrides:
        p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every distillation")
    return p


def build_parser() -> Parser:
    from fewstep.methods import get_method

    p = Parser(prog="fewstep", description="Distill diffusion models into one-step and few-step generators.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    tr = sub.add_parser("train", help="train a teacher or a tokenizer")
    tr_sub = tr.add_subparsers(dest="what", required=True, parser_class=Parser)
    t = tr_sub.add_parser("teacher", help="masked-diffusion (MaskGIT) teacher")
    t.add_argument("--kind", default="maskgit", choices=["maskgit", "edm"],
                   help="maskgit: masked diffusion over tokens; edm: continuous (EDM) denoiser")
    add_train_flags(t)
    t = tr_sub.add_parser("tokenizer", help="VQ tokenizer for 28x28 images")
    add_train_flags(t)

    ds = sub.add_parser("distill", help="distill a teacher run into a one-step / few-step generator")
    ds_sub = ds.add_subparsers(dest="method", required=True, parser_class=Parser)
    for name, desc in DISTILLERS.items():
        t = ds_sub.add_parser(name, help=desc)
        t.add_argument("--teacher", required=True, help="teacher run folder")
        if get_method(name).can_start_from_run():
            add_run_flags(t, "method/train/finetune", "train.steps=2000 finetune.train.steps=500 finetune.train.lr=3e-5 "
                          "(finetune: a second run started from the first; it goes to <out>, the first to <out>/base; "
                          "a finetune section nested in it adds a third run, and so on)")
        else:
            add_run_flags(t, "method/train", "train.steps=2000")

    s = sub.add_parser("sample", help="sample a grid (and optionally tokens) from a run")
    s.add_argument("--run", required=True, help="run folder or checkpoint folder")
    s.add_argument("--n", type=int, default=100, help="number of samples")
    s.add_argument("--classes", help="comma-separated class ids (default: cycle through all classes)")
    s.add_argument("--seeds", default=None, help="per-sample seeds, e.g. 0-99 (default 0..n-1)")
    s.add_argument("--out", default=None, help="PNG grid path (default <run>/samples.png)")
    s.add_argument("--tokens", help="also save tokens + labels to this .safetensors file")
    s.add_argument("--device", default="auto", help="cpu | cuda | auto")
    add_sampler_flags(s)

    e = sub.add_parser("eval", help="FID/KID/precision/recall/class accuracy/intra-FID (or exact metrics) of a run")
    e.add_argument("--run", required=True)
    e.add_argument("--n", type=int, help="samples per repeat (default: size of the test split)")
    e.add_argument("--repeats", type=int, default=1, help=REPEATS_HELP)
    e.add_argument("--json", help="write the result here (default <run>/eval.json)")
    e.add_argument("--extend", metavar="FILE",
                   help="an earlier eval JSON of this run: score its next seed blocks up to --repeats in all, with "
                        "its n and sampler, and rewrite it (or --json) with every mean over all blocks. Every eval "
                        "saves its blocks as they finish, so an interrupted one goes on with --extend")
    e.add_argument("--checkpoints", action="store_true",
                   help="score every saved checkpoint of the run folder not yet scored with these settings, "
                        "appending to <run>/eval.jsonl (for `fewstep plot`)")
    e.add_argument("--device", default="auto")
    add_sampler_flags(e)

    b = sub.add_parser("bench", help="benchmarks that write JSON + Markdown tables")
    b_sub = b.add_subparsers(dest="what", required=True, parser_class=Parser)
    bt = add_bench_parser(b_sub, "teacher", "teacher quality and speed at 1..32 steps, with and without CFG",
                          tokenizer=True, overrides=False, speed=False)
    bt.add_argument("--steps", default="1,2,4,8,16,32", help="comma-separated step counts")
    bt.add_argument("--cfg", type=float, help="guidance scale of the 'with CFG' rows (default: the teacher's)")
    bt.add_argument("--remask", choices=["confidence", "random"], help="re-masking rule of every row")
    bt.add_argument("--desmooth", type=float, metavar="EPS", help="remove label smoothing EPS in every row")
    bd = add_bench_parser(b_sub, "dimo", "DiMO student vs teacher, speed, ablations", tokenizer=True)
    bd.add_argument("--student", help="an existing DiMO run to evaluate instead of distilling a new one")
    bd.add_argument("--steps", default="1,2,4,8,16,32", help="teacher step counts")
    bd.add_argument("--ablations", default="", help="comma-separated: r_init,divergence,sigma_init")
    bd.add_argument("--ablation-steps", type=int, default=300, help="distillation steps per ablation run")
    for which in ("dmd2", "msd"):
        bc = add_bench_parser(b_sub, which, f"{which.upper()} students vs the EDM teacher at every NFE")
        bc.add_argument("--only", help="a whole variant label, or comma-separated substrings of labels (e.g. 'K=2,smaller')")
        bc.add_argument("--student", action="append", metavar="RUN",
                        help="score this DMD2/MSD run or checkpoint instead of distilling the variants (repeatable)")
        bc.add_argument("--steps", default="1,2,3,5,9,18", help="the teacher's Heun step counts")
        if which == "msd":
            bc.add_argument("--per-student-batch", action="store_true",
                            help="give each of K students the full batch (K x the compute of DMD2) instead of batch/K")

    x = sub.add_parser("export", help="slim inference checkpoint: EMA weights + config, no optimizer state")
    x.add_argument("--run", required=True, nargs="+",
                   help="a run or checkpoint; several msd runs that each trained some students (method.only_students) "
                        "merge into one model")
    x.add_argument("--out", required=True)

    pl = sub.add_parser("plot", help="training curves of runs: a metric from eval.jsonl or stats.jsonl vs step")
    pl.add_argument("runs", nargs="+", help="run folders")
    pl.add_argument("--metric", default="fid", help="fid, recall, ... (eval.jsonl) or e.g. generator/loss (stats)")
    pl.add_argument("--out", required=True, help="PNG path")
    pl.add_argument("--label", action="append", help="legend name, once per run in order (default: folder names)")
    pl.add_argument("--hline", action="append", metavar="NAME=VALUE", help="reference line, e.g. 'teacher=19.1'")
    pl.add_argument("--smooth", type=int, default=1, help="trailing mean over N points (1 = raw)")
    pl.add_argument("--logy", action="store_true", help="log-scale y axis")
    pl.add_argument("--title")

    c = sub.add_parser("compare", help="paired difference of eval results, seed block by seed block")
    c.add_argument("base", help="eval JSON everything is compared against (e.g. the teacher's)")
    c.add_argument("others", nargs="+", metavar="other", help="eval JSONs of the models to compare")
    c.add_argument("--metric", default="fid", help="metrics the JSONs keep per block, comma-separated, patterns "
                   "allowed (default fid; e.g. fid,recall or 'fid_class_*')")
    c.add_argument("--json", help="also write the comparison here")

    d = sub.add_parser("demo", help="the whole story on the embedded digits dataset")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--fast", action="store_true", help="tiny settings (seconds), for smoke tests")

    sub.add_parser("info", help="list methods, datasets, networks and presets")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse, except that key=value overrides may also come after later flags (`--teacher T a=1 --out R b=2`):
    argparse's positional list stops at the first flag and would reject the rest."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from fewstep.errors import FewstepError

    try:
        from fewstep.cli import commands

        return int(commands.dispatch(args) or 0)
    except FewstepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not a path problem: a bug or the system's, keep its traceback
            raise
        print(f"error: {e.strerror}: '{e.filename}' (check that '{Path(str(e.filename)).parent}' is a folder you may "
              "write to)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was saved is kept (the last complete checkpoint; the eval blocks scored)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The one training loop. It never names a method: methods declare networks and phases (methods/base.py).

The trainer owns devices and accelerate, optimizers, LR warm-up, gradient accumulation and clipping,
the NaN/Inf guard, EMA, JSONL logging and the progress bar, checkpoints and exact resume.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fewstep import checkpoint as ckpt_io
from fewstep.config import to_dict
from fewstep.data.stream import BatchStream
from fewstep.ema import EMA
from fewstep.errors import FewstepError
from fewstep.methods.base import Method, Net, Phase, StepContext
from fewstep.runlog import JsonlLog, Timer, progress, say


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear LR warm-up, then the schedule
    lr_schedule: str = "constant"  # constant | cosine (decays to 10% of lr at the last step)
    grad_clip: float | None = 1.0  # max grad norm; null: never clip
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + n) / (10 + n))
    seed: int = 0
    # fp32 | bf16 | fp16. On a CPU bf16 autocast made a UNet step 1.4-2x faster where the chip has AVX512-BF16
    # (2-core AMD EPYC) and ~4x slower on one without (2-core Intel Xeon): time both there
    precision: str = "fp32"
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 25
    ckpt_every: int = 500
    keep_checkpoints: int = 2  # 0: keep all
    max_bad_steps: int = 20  # abort after this many consecutive non-finite losses/gradients

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps must be >= 0, batch_size and grad_accum >= 1")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not '{self.precision}'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, not '{self.lr_schedule}'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not '{self.device}'")
        if not self.lr > 0 or self.weight_decay < 0 or not self.adam_eps > 0:
            raise ValueError("lr and adam_eps must be > 0, weight_decay >= 0")
        if not (0.0 <= self.ema_decay < 1.0 and all(0.0 <= b < 1.0 for b in self.betas)):
            raise ValueError("ema_decay and both betas must be in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:  # clipping to <= 0 zeroes or flips gradients
            raise ValueError(f"grad_clip must be > 0, or null to never clip (got {self.grad_clip})")
        if self.warmup_steps < 0 or self.keep_checkpoints < 0 or min(self.log_every, self.ckpt_every,
                                                                     self.max_bad_steps) < 1:
            raise ValueError("warmup_steps and keep_checkpoints must be >= 0; log_every, ckpt_every and "
                             "max_bad_steps >= 1")


@dataclass
class TrainState:
    """What hooks see after every step."""

    step: int
    run_dir: Path
    method: Method
    nets: dict[str, nn.Module]  # EMA copies where kept (what sampling should use), else the live nets
    live: dict[str, nn.Module]
    logs: dict[str, float] = field(default_factory=dict)
    is_main: bool = True


Hook = Callable[[TrainState], None]

# keys of train config that may change when a run is resumed or extended (weights and optimizer state are fp32 in
# every precision, so a run started on a GPU may go on on a CPU, in the precision that is fast there)
RESUMABLE_KEYS = {"steps", "log_every", "ckpt_every", "keep_checkpoints", "max_bad_steps", "precision", "device"}


def _field_defaults(cfg) -> dict:
    """What a run saved without a field behaved as: the field's default or, where that default is a new behaviour,
    the old one its config class names in `legacy_defaults`."""
    if not dataclasses.is_dataclass(cfg):
        return {}
    plain = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    return {**plain, **getattr(cfg, "legacy_defaults", {})}


class Trainer:
    def __init__(self, method: Method, train_cfg: TrainConfig, run_dir: str | Path, full_config: dict,
                 hooks: list[tuple[int, Hook]] | None = None, show_progress: bool = True):
        self.method, self.cfg, self.run_dir = method, train_cfg, Path(run_dir)
        self.full_config = full_config
        self.hooks = hooks or []
        self.show_progress = show_progress

    # ------------------------------------------------------------------ setup
    def _accelerator(self):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # accelerate fixes precision and device once per process; each run sets its own (the process group stays)
        AcceleratorState._reset_state()
        cpu = self.cfg.device == "cpu" or (self.cfg.device == "auto" and not torch.cuda.is_available())
        if self.cfg.device == "cuda" and not torch.cuda.is_available():
            raise FewstepError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
        mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.cfg.precision]
        return Accelerator(cpu=cpu, mixed_precision=mp)

    def _setup(self):
        acc = self.accelerator = self._accelerator()
        torch.manual_seed(self.cfg.seed * 7919 + acc.process_index)
        self.nets: dict[str, Net] = self.method.build()
        self.phase_list: list[Phase] = self.method.phases()
        unknown = {n for ph in self.phase_list for n in ph.trains} - {k for k, v in self.nets.items() if v.trainable}
        if unknown:
            raise FewstepError(f"method '{self.method.name}' trains networks it did not declare trainable: {unknown}")
        self.total_steps = self.method.stage_steps() + self.cfg.steps
        self.raw: dict[str, nn.Module] = {}
        self.wrapped: dict[str, nn.Module] = {}
        self.optims: dict[str, torch.optim.Optimizer] = {}
        self.params: dict[str, list[nn.Parameter]] = {}
        self.emas: dict[str, EMA] = {}
        for name, net in self.nets.items():
            module = net.module.to(acc.device)
            self.raw[name] = module
            if not net.trainable:
                module.eval().requires_grad_(False)
                self.wrapped[name] = module
                continue
            train_named = dict(net.trainable_parameters())
            for pname, p in module.named_parameters():
                p.requires_grad_(pname in train_named)
            params = list(train_named.values())
            opt = torch.optim.AdamW(params, lr=net.lr or self.cfg.lr, betas=tuple(self.cfg.betas),
                                    eps=self.cfg.adam_eps, weight_decay=self.cfg.weight_decay)
            module.train()
            wrapped, opt = acc.prepare(module, opt)
            self.wrapped[name], self.optims[name], self.params[name] = wrapped, opt, params
            for g in opt.param_groups:
                g["base_lr"] = net.lr or self.cfg.lr
            if net.ema:
                self.emas[name] = EMA(module, self.cfg.ema_decay, self.cfg.ema_warmup)
        self.streams: dict[str, BatchStream] = {}
        if self.method.needs_data:
            data = self.method.training_data()
            named = data if all(isinstance(v, dict) for v in data.values()) else {"default": data}
            for i, (sname, tensors) in enumerate(sorted(named.items())):
                self.streams[sname] = BatchStream(tensors, self.cfg.batch_size, self.cfg.seed + 7 * i,
                                                  acc.process_index, acc.num_processes, acc.device)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_config(self) -> dict:
        return {
            **self.full_config,
            "networks": {n: self.raw[n].spec() for n in self.nets if hasattr(self.raw[n], "spec")},
            "trainable": [n for n, v in self.nets.items() if v.trainable],
            "info": self.method.info(),
        }

    def save(self, step: int, extra_meta: dict | None = None) -> Path | None:
        acc = self.accelerator
        rng = ckpt_io.rng_state()
        # every rank's RNG state is needed for an exact multi-process resume
        rng_states = [rng]
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            rng_states = gather_object([rng])
        path = None
        if acc.is_main_process:
            trainable = [n for n, v in self.nets.items() if v.trainable]
            meta = {
                "data_cursors": {k: v.cursor for k, v in self.streams.items()},
                "ema_updates": {n: e.num_updates for n, e in self.emas.items()},
                "bad_steps": self.bad_steps,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "world_size": acc.num_processes,
                **(extra_meta or {}),
            }
            path = ckpt_io.save_checkpoint(
                self.run_dir / "checkpoints", step, config=self._checkpoint_config(),
                nets={n: self.raw[n] for n in trainable},
                emas={n: e.module for n, e in self.emas.items()},
                optims={n: self.optims[n].optimizer if hasattr(self.optims[n], "optimizer") else self.optims[n]
                        for n in trainable},
                meta=meta, rng_rank_states=rng_states, keep=self.cfg.keep_checkpoints,
            )
        acc.wait_for_everyone()
        return path

    def _check_compatible(self, saved: dict) -> None:
        now = self.full_config
        defaults = {"method": _field_defaults(self.method.cfg), "data": _field_defaults(self.method.data_cfg)}
        for section in ("method", "data"):
            old, new = saved.get(section, {}), now.get(section, {})
            # a key the saved run lacks was added to fewstep later
            was = {k: old.get(k, defaults[section].get(k)) for k in set(old) | set(new)}
            diff = sorted(f"{k}: {was[k]} there, {new.get(k)} now" for k in was if not _same_setting(was[k], new.get(k)))
            if diff:
                raise FewstepError(
                    f"'{self.run_dir}' holds a run with a different {section} config ({'; '.join(diff)}); "
                    f"pass the same {section} settings to resume it, or use a new --out folder or --fresh to start over"
                )
        a = {k: v for k, v in saved.get("train", {}).items() if k not in RESUMABLE_KEYS}
        b = {k: v for k, v in now.get("train", {}).items() if k not in RESUMABLE_KEYS}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise FewstepError(
                f"'{self.run_dir}' was trained with different train settings ({', '.join(diff)}); "
                "only steps, log/checkpoint cadence, precision and device may change on resume; use a new --out "
                "or --fresh"
            )

    def _resume(self) -> int:
        path = ckpt_io.latest_checkpoint(self.run_dir)
        if path is None:
            return 0
        config, meta = ckpt_io.read_checkpoint_json(path)
        self._check_compatible(config)
        saved = config.get("train", {})
        if self.cfg.lr_schedule == "cosine" and saved.get("steps") != self.cfg.steps:
            say(f"note: train.steps changed from {saved.get('steps')} to {self.cfg.steps}; the cosine LR "
                "schedule is recomputed for the new length")
        if saved.get("precision", "fp32") != self.cfg.precision:
            say(f"note: train.precision changed from {saved.get('precision', 'fp32')} to {self.cfg.precision} at "
                f"step {meta['step']}; the run's config records the new one")
        for name in self.optims:
            ckpt_io.load_weights(self.raw[name], path / f"{name}.safetensors")
            opt = self.optims[name]
            inner = opt.optimizer if hasattr(opt, "optimizer") else opt
            ckpt_io.optimizer_from_files(inner, ckpt_io.read_tensors(path / f"{name}_optim.safetensors"),
                                         meta["optimizers"][name])
        for name, ema in self.emas.items():
            ckpt_io.load_weights(ema.module, path / f"{name}_ema.safetensors")
            ema.num_updates = meta["ema_updates"][name]
        for sname, cursor in meta.get("data_cursors", {}).items():
            if sname in self.streams:
                self.streams[sname].cursor = cursor
        self.bad_steps = meta.get("bad_steps", 0)
        rank = self.accelerator.process_index
        rng_file = path / f"rng_rank{rank}.safetensors"
        if rng_file.is_file() and rank < len(meta["rng"]):
            ckpt_io.set_rng_state(ckpt_io.read_tensors(rng_file), meta["rng"][rank])
        say(f"resuming {self.run_dir} from step {meta['step']}")
        return int(meta["step"])

    # ------------------------------------------------------------------ the loop
    def _set_lr(self, names: tuple[str, ...], step: int) -> float:
        w = self.cfg.warmup_steps
        factor = min(1.0, (step + 1) / w) if w > 0 else 1.0
        if self.cfg.lr_schedule == "cosine" and step >= w:
            progress_ = (step - w) / max(1, self.total_steps - w)
            factor *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))
        lr = 0.0
        for n in names:
            for g in self.optims[n].param_groups:
                g["lr"] = g["base_lr"] * factor
                lr = g["lr"]
        return lr

    def _clip_value(self, name: str) -> float | None:
        c = self.nets[name].grad_clip
        return self.cfg.grad_clip if c == -1.0 else c

    def _grad_norm(self, name: str) -> float:
        params = [p for p in self.params[name] if p.grad is not None]
        if not params:
            return 0.0
        clip = self._clip_value(name)
        if clip is None:
            total = torch.norm(torch.stack([p.grad.detach().float().norm() for p in params]))
        else:
            total = self.accelerator.clip_grad_norm_(params, clip)
        return float(total)

    def _all_finite(self, value: torch.Tensor | float) -> bool:
        ok = torch.tensor(float(math.isfinite(float(value))), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            ok = self.accelerator.reduce(ok, reduction="sum") / self.accelerator.num_processes
        return bool(ok.item() == 1.0)

    def _is_log_step(self, done: int) -> bool:
        """Whether stats.jsonl gets the logs of the step that brings the count to `done`."""
        return done % self.cfg.log_every == 0 or done == self.total_steps

    def _run_phase(self, phase: Phase, step: int, logs: dict[str, float]) -> None:
        acc = self.accelerator
        trains = phase.trains
        for name, net in self.nets.items():
            if net.trainable:
                module = self.raw[name]
                # a network this phase only uses (e.g. the critic inside the generator step) runs as a fixed
                # function: no gradients into its weights, eval mode (no dropout)
                module.train(name in trains)
                train_set = dict(net.trainable_parameters())
                for pname, p in module.named_parameters():
                    p.requires_grad_(name in trains and pname in train_set)
        lr = self._set_lr(trains, step)
        ctx = StepContext(step=step, phase=phase, batch_size=self.cfg.batch_size, device=acc.device,
                          wrapped=self.wrapped, raw=self.raw, next_batch=self._next_batch,
                          logged=self._is_log_step(step + 1))
        for _ in range(phase.repeat):
            loss_sum, out_logs, finite = 0.0, {}, True
            for _ in range(self.cfg.grad_accum):
                with acc.autocast():
                    out = phase.step(ctx)
                if not self._all_finite(out.loss.detach()):
                    finite = False
                    break
                acc.backward(out.loss / self.cfg.grad_accum)
                loss_sum += float(out.loss.detach()) / self.cfg.grad_accum
                for k, v in out.logs.items():
                    out_logs[k] = out_logs.get(k, 0.0) + float(v) / self.cfg.grad_accum
            norms = {n: self._grad_norm(n) for n in trains} if finite else {}
            if finite and not all(self._all_finite(v) for v in norms.values()):
                finite = False
            if not finite:
                self.bad_steps += 1
                logs[f"{phase.name}/skipped"] = logs.get(f"{phase.name}/skipped", 0) + 1
                for n in trains:
                    self.optims[n].zero_grad(set_to_none=True)
                if self.bad_steps >= self.cfg.max_bad_steps:
                    raise FewstepError(
                        f"{self.bad_steps} consecutive non-finite losses/gradients in phase '{phase.name}' "
                        f"at step {step}; lower train.lr or enable train.grad_clip (last good checkpoint kept)"
                    )
                continue
            self.bad_steps = 0
            for n in trains:
                self.optims[n].step()
                self.optims[n].zero_grad(set_to_none=True)
                if n in self.emas:
                    self.emas[n].update(self.raw[n])
            logs[f"{phase.name}/loss"] = loss_sum
            for k, v in out_logs.items():
                logs[f"{phase.name}/{k}"] = v
            for n, v in norms.items():
                logs[f"{phase.name}/grad_norm_{n}"] = v
            logs[f"{phase.name}/lr"] = lr

    def _next_batch(self, stream: str = "default") -> dict[str, torch.Tensor]:
        if stream not in self.streams:
            raise RuntimeError(f"method '{self.method.name}' asked for data stream '{stream}'; it has "
                               f"{sorted(self.streams) or 'none (needs_data=False)'}")
        return next(self.streams[stream])

    def sampling_nets(self) -> dict[str, nn.Module]:
        return {n: (self.emas[n].module if n in self.emas else self.raw[n]) for n in self.nets}

    def fit(self, fresh: bool = False) -> dict[str, Any]:
        """Train stage_steps() + `train.steps` steps, resuming unless `fresh`. Returns final logs."""
        self.method.resuming = not fresh and ckpt_io.latest_checkpoint(self.run_dir) is not None
        self._setup()
        acc = self.accelerator
        self.bad_steps = 0
        if fresh and acc.is_main_process and (self.run_dir / "checkpoints").exists():
            import shutil

            shutil.rmtree(self.run_dir / "checkpoints")
            (self.run_dir / "stats.jsonl").unlink(missing_ok=True)
        acc.wait_for_everyone()
        start = 0 if fresh else self._resume()
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt_io.write_json_atomic(self.run_dir / "config.json", self._checkpoint_config())
        log = JsonlLog(self.run_dir / "stats.jsonl", enabled=acc.is_main_process)
        bar = progress(self.total_steps, initial=start, desc=self.method.name,
                       enabled=self.show_progress and acc.is_main_process)
        timer, last_logs = Timer(), {}
        main_loss_key = None
        for step in range(start, self.total_steps):
            logs: dict[str, float] = {}
            for phase in self.phase_list:
                if phase.active(step):
                    self._run_phase(phase, step, logs)
            self.method.on_step_end(self.raw, step)
            done = step + 1
            last_logs = logs
            main_loss_key = main_loss_key or next((k for k in logs if k.endswith("/loss")), None)
            if main_loss_key and main_loss_key in logs:
                bar.set_postfix({"loss": f"{logs[main_loss_key]:.4f}"}, refresh=False)
            bar.update(1)
            last = done == self.total_steps
            if self._is_log_step(done):
                log.write({"step": done, "time": round(timer.elapsed(), 3), **logs})
            if done % self.cfg.ckpt_every == 0 or last:
                self.save(done)
            due = [hook for every, hook in self.hooks if every > 0 and (done % every == 0 or last)]
            if due:  # after saving: a failing hook never costs a checkpoint
                modes = {n: m.training for n, m in self.raw.items()}
                for m in self.raw.values():
                    m.eval()
                state = TrainState(done, self.run_dir, self.method, self.sampling_nets(), self.raw, logs,
                                   acc.is_main_process)
                cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
                with torch.random.fork_rng(devices=cuda):  # hooks never shift the training RNG
                    for hook in due:
                        hook(state)
                for n, m in self.raw.items():
                    m.train(modes[n])
        bar.close()
        if start >= self.total_steps and ckpt_io.latest_checkpoint(self.run_dir) is None:
            self.save(start)
        return last_logs


def config_record(method_name: str, method_cfg: Any, data_cfg: Any, train_cfg: TrainConfig) -> dict:
    """The resolved experiment config as stored in config.json."""
    return {
        "method": {"name": method_name, **to_dict(method_cfg)},
        "data": to_dict(data_cfg),
        "train": to_dict(train_cfg),
    }


def replace(cfg: Any, **kw) -> Any:
    return dataclasses.replace(cfg, **kw)


def _same_setting(a: Any, b: Any) -> bool:
    """Equal, or two spellings (relative, absolute, via a link) of one existing path, e.g. a teacher run folder."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False

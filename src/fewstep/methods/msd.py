"""MSD: Multi-Student Distillation (Song, Lorraine, Nie, Kreis, Lucas; arXiv 2410.23274, ICML 2025).

K one-step students, each distilled with DMD2 on its own disjoint set of classes (sequential class ranges,
the paper's best partition, Table 3); sampling routes each class to the one student that owns it, so a
sample still costs one forward pass of one student. Same-size students start as teacher copies. Smaller
students (`student_channels`) are first trained by Teacher Score Matching (TSM, §3.3):
lambda(sigma) ||G_k(x_sigma; sigma) - D_teacher(x_sigma; sigma)||^2 on noised real data of their classes,
sigma over the whole noise grid, for `tsm_steps` steps before the train.steps of the DM(+GAN) stage. Each
student has its own critic and GAN head, and its own stream of real images of its classes. The paper does not
say how large the smaller students' critics are: by default (`small_critics`) each is the student's size and starts
the DM stage as a copy of its TSM-trained student, as DMD starts its fake score where the generator starts; with
`small_critics=false` they are teacher copies. There is no official code; this follows the paper's text.

The students never interact (the paper trains them separately), so `only_students` trains a subset: each student
can be its own job, on its own machine, with its own batch; `fewstep export --run RUN... --out M` merges the runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from fewstep import checkpoint as ckpt_io
from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.methods.base import Net, Phase, StepContext, StepOut
from fewstep.methods.common.start import load_start_weights, start_run_method
from fewstep.methods.dmd2 import DMD2, DMD2Config
from fewstep.methods.edm import check_levels, check_widths, continuous_training_data
from fewstep.models.unet import MLPDenoiser, UNetDenoiser
from fewstep.processes.gaussian import expand, loss_weight
from fewstep.samplers.gaussian import fewstep_sample


@dataclass
class MSDConfig(DMD2Config):
    students: int = 4
    student_channels: tuple[int, ...] | None = None  # None: teacher-sized students (copies); else smaller UNets
    tsm_steps: int = 0  # TSM steps run before train.steps; smaller students only, and required for them
    small_critics: bool = True  # smaller students' critics at their size, copied from them when TSM ends
    only_students: tuple[int, ...] | None = None  # None: all; else the students (0 .. students-1) this run trains
    # runs saved before small_critics existed had teacher-sized critics: they resume with small_critics=false
    legacy_defaults: ClassVar[dict] = {"small_critics": False}

    def __post_init__(self):
        super().__post_init__()
        if self.students < 1:
            raise ValueError("students must be >= 1")
        if self.student_channels is not None:
            check_widths("student_channels", self.student_channels)
        if self.student_channels is not None and self.small_critics and self.step_critic:
            raise ValueError("step_critic needs teacher-sized critics; with student_channels set small_critics=false")
        if self.student_channels is not None and self.tsm_steps < 1:
            raise ValueError("smaller students (student_channels) need TSM pre-training: set tsm_steps > 0")
        if self.only_students is not None:
            picked = [int(k) for k in self.only_students]
            if not picked or len(set(picked)) < len(picked) or not all(0 <= k < self.students for k in picked):
                raise ValueError(f"only_students must list distinct students between 0 and {self.students - 1}, "
                                 f"not {list(self.only_students)}")
            self.only_students = tuple(sorted(picked))
        if self.student_channels is None:
            self.small_critics = False  # same-size students' critics are teacher copies either way


def partition_classes(num_classes: int, k: int) -> list[list[int]]:
    """k contiguous, disjoint class ranges covering all classes, sizes differing by at most one."""
    if k > num_classes:
        raise ValueError(f"{k} students for {num_classes} classes: each student needs at least one class")
    sizes = [num_classes // k + (1 if i < num_classes % k else 0) for i in range(k)]
    out, start = [], 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


def route(labels: torch.Tensor, partition: list[list[int]]) -> torch.Tensor:
    """Student index of every label."""
    owner = torch.full((max(max(p) for p in partition) + 1,), -1, dtype=torch.long)
    for k, classes in enumerate(partition):
        owner[classes] = k
    return owner.to(labels.device)[labels]


def merge_student_runs(runs: list[str], out: str) -> Path:
    """One inference checkpoint from MSD runs that each trained some of the same K students (`only_students`):
    each student's generator and critic come from the run that trained it."""
    found = []
    for run in runs:
        ckpt = ckpt_io.resolve_checkpoint(run)
        config, meta = ckpt_io.read_checkpoint_json(ckpt)
        if config.get("method", {}).get("name") != "msd":
            raise FewstepError(f"'{run}' is not an msd run; export merges msd runs that each trained some students "
                               "(method.only_students)")
        found.append((run, ckpt, config, meta))
    _, _, first, _ = found[0]
    same = lambda c: (c["method"].get("student_channels"),  # noqa: E731
                      *(c["info"][k] for k in ("teacher", "partition", "shape", "gen_sigmas")))
    owner: dict[int, tuple[str, Path, dict]] = {}  # student -> (run, step folder, config) of the run that trained it
    for run, ckpt, config, _ in found:
        if same(config) != same(first):
            raise FewstepError(f"'{run}' does not fit '{found[0][0]}': merged students need the same teacher, number "
                               "of students, student size and one-step noise levels")
        for k in config["info"].get("trained", range(config["method"]["students"])):
            if k in owner:
                raise FewstepError(f"student {k} is trained in both '{owner[k][0]}' and '{run}'; pass one run per "
                                   "student")
            owner[k] = (run, ckpt, config)
    missing = sorted(set(range(first["method"]["students"])) - set(owner))
    if missing:
        raise FewstepError(f"no run trains student(s) {missing}; train them with method.only_students={missing} and "
                           "pass those runs too")
    config = copy.deepcopy(first)
    config["method"]["only_students"] = None
    config["info"]["trained"] = sorted(owner)
    config["networks"] = {n: spec for n, spec in first["networks"].items() if n not in first["trainable"]}
    weights = {}
    for k, (_, ckpt, c) in sorted(owner.items()):
        for name in (f"generator{k}", f"critic{k}"):
            if name in c["networks"]:  # a critic has no spec of its own: sampling never builds it
                config["networks"][name] = c["networks"][name]
            weights[name] = ckpt_io.sampling_weights(ckpt, name)
    config["trainable"] = list(weights)
    sources = [{"run": str(ckpt), "step": meta["step"], "students": c["info"].get("trained")}
               for _, ckpt, c, meta in found]
    meta = {**found[0][3], "step": max(s["step"] for s in sources), "merged_from": sources}
    return ckpt_io.write_inference(out, config, meta, weights)


def tsm_stage_steps(method: dict) -> int:
    """TSM steps a run with these method settings trains first: smaller students only, and none for students
    started from an earlier run."""
    if method.get("student_channels") is None or method.get("init_from"):
        return 0
    return int(method.get("tsm_steps") or 0)


class MSD(DMD2):
    name = "msd"
    Config = MSDConfig

    @property
    def partition(self) -> list[list[int]]:
        classes = int(self._teacher().info.get("num_classes") or 0)
        if not 1 <= self.cfg.students <= classes:
            raise FewstepError(f"method.students={self.cfg.students}, but the teacher has {classes} classes and each "
                               f"student needs at least one; set method.students between 1 and {classes}")
        return partition_classes(classes, self.cfg.students)

    @property
    def trained(self) -> list[int]:
        """The students this run builds and trains."""
        return list(self.cfg.only_students or range(self.cfg.students))

    def _small_student(self, teacher) -> torch.nn.Module:
        cfg = copy.deepcopy(teacher.cfg)
        if isinstance(teacher, MLPDenoiser):
            cfg.hidden = int(self.cfg.student_channels[0])
            return MLPDenoiser(cfg)
        cfg.channels = tuple(int(c) for c in self.cfg.student_channels)
        check_levels("method.student_channels", cfg.channels, cfg.image_size)
        cfg.dropout = 0.0
        return UNetDenoiser(cfg)

    def build(self) -> dict[str, Net]:
        self._setup_grid()
        teacher = self._teacher().nets["model"]
        nets = {"teacher": Net(teacher)}
        for k in self.trained:
            gen = self._copy(teacher) if self.cfg.student_channels is None else self._small_student(teacher)
            nets[f"generator{k}"] = Net(gen, trainable=True, ema=True)
            # a small critic's weights are placeholders until TSM ends (see seed_critic)
            fake = self._small_student(teacher) if self.cfg.small_critics else teacher
            nets[f"critic{k}"] = Net(self._critic(fake), trainable=True, lr=self.cfg.critic_lr)
        return self._start_from_run(nets)

    def _start_from_run(self, nets: dict[str, Net]) -> dict[str, Net]:
        if self.cfg.init_from and not self.resuming:
            found = start_run_method(self.cfg.init_from)
            if found == "dmd2":
                return self._start_from_dmd2(nets)
            if found != self.name:
                raise FewstepError(f"method.init_from: '{self.cfg.init_from}' holds a {found} run; pass an msd or a "
                                   "dmd2 run of the same teacher")
        nets = super()._start_from_run(nets)
        if not self.cfg.init_from or self.resuming or self.cfg.student_channels is None:
            return nets
        ckpt = ckpt_io.resolve_checkpoint(self.cfg.init_from)
        config, meta = ckpt_io.read_checkpoint_json(ckpt)
        tsm = tsm_stage_steps(config.get("method", {}))
        if meta["step"] < tsm:
            raise FewstepError(f"method.init_from: '{self.cfg.init_from}' stopped at step {meta['step']}, inside its "
                               f"{tsm} TSM steps; finish that run first (rerun it with the same --out) or pass one "
                               f"of its checkpoints from step {tsm} on")
        if meta["step"] == tsm > 0 and self.cfg.small_critics:  # its DM stage never began: the critics are placeholders
            for k in self.trained:
                self.seed_critic(nets[f"generator{k}"].module, nets[f"critic{k}"].module)
        return nets

    def _start_from_dmd2(self, nets: dict[str, Net]) -> dict[str, Net]:
        """Every same-size student starts as one DMD2 run's generator and every critic as its critic (GAN head
        included): one trained one-step student, specialised per class range from there on."""
        if self.cfg.student_channels is not None:
            raise FewstepError(f"method.init_from: '{self.cfg.init_from}' is a dmd2 run, whose networks are the "
                               "teacher's size; drop method.student_channels or pass an msd run of that size")
        names = {f"{role}{k}": role for k in self.trained for role in ("generator", "critic")}
        load_start_weights(self.cfg.init_from, "dmd2", {n: nets[n].module for n in names}, sources=names)
        return nets

    def training_data(self) -> dict[str, dict[str, torch.Tensor]]:
        data = continuous_training_data(load_dataset(self.data_cfg.name, self.data_cfg.data_dir))
        streams, parts = {}, {f"part{k}": self.partition[k] for k in self.trained}
        for name, classes in parts.items():
            keep = torch.isin(data["labels"], torch.tensor(classes))
            streams[name] = {key: v[keep] for key, v in data.items()}
        if self.cfg.regression_weight:
            streams["pairs"] = self.regression_pairs()  # shared, not split by partition
        return {**streams, **self.teacher_streams(parts)}

    def stage_steps(self) -> int:
        return tsm_stage_steps(vars(self.cfg))

    def phases(self) -> list[Phase]:
        tsm = self.stage_steps()
        out = []
        for k in self.trained:
            g, c, s = f"generator{k}", f"critic{k}", f"part{k}"
            if tsm:
                out.append(Phase(f"tsm{k}", lambda ctx, g=g, s=s: self.tsm_step(ctx, g, s), trains=(g,), stop=tsm))
            out.append(Phase(f"generator{k}", lambda ctx, g=g, c=c, s=s: self.dm_generator_step(ctx, g, c, s),
                             trains=(g,), start=tsm))
            out.append(Phase(f"critic{k}", lambda ctx, g=g, c=c, s=s: self.critic_step(ctx, c, g, s), trains=(c,),
                             repeat=self.cfg.critic_updates, start=tsm))
        return out

    def dm_generator_step(self, ctx: StepContext, gen_name: str, critic_name: str, stream: str) -> StepOut:
        if self.cfg.small_critics and ctx.step == self.stage_steps() > 0:
            self.seed_critic(ctx.raw[gen_name], ctx.raw[critic_name])
        return self.generator_step(ctx, gen_name, critic_name, stream)

    @staticmethod
    @torch.no_grad()
    def seed_critic(student: torch.nn.Module, critic: torch.nn.Module) -> None:
        """At the first DM step, the small critic's denoiser becomes a copy of its TSM-trained student: the fake
        score then starts where the generator does, as a teacher-copy critic does for teacher-copy students."""
        critic.denoiser.load_state_dict(student.state_dict())

    def tsm_step(self, ctx: StepContext, gen_name: str, stream: str) -> StepOut:
        """Teacher Score Matching: regress the student denoiser onto the teacher's denoiser on noised real data."""
        batch = ctx.batch(stream)
        x, y = batch["x"], batch["labels"]
        # levels over the whole Karras grid, as the critic draws them: EDM's log-normal almost never reaches
        # sigma_max = 80, the level a one-step generator is used at
        sigma = self._level(len(x), 0.0, 1.0, x.device)
        x_t = x + expand(sigma, x) * torch.randn_like(x)
        with torch.no_grad():
            target = ctx.net("teacher")(x_t, sigma, y)
        pred = ctx.net(gen_name)(x_t, sigma, y)
        return StepOut((expand(loss_weight(sigma, self.sigma_data), x) * (pred - target) ** 2).mean())

    def info(self) -> dict:
        return {**super().info(), "partition": self.partition, "students": self.cfg.students, "trained": self.trained}

    @classmethod
    def contract_setup(cls, workdir) -> dict:
        setup = DMD2.contract_setup(workdir)
        setup["method"].update({"students": 2, "student_channels": [8, 8], "tsm_steps": 1, "gen_steps": 1})
        return setup

    @staticmethod
    def generate(nets: dict[str, torch.nn.Module], info: dict, labels: torch.Tensor, seeds: list[int],
                 **opt: Any) -> torch.Tensor:
        owner = route(labels, info["partition"])
        out = None
        for k in range(len(info["partition"])):
            rows = (owner == k).nonzero().flatten()
            if len(rows) == 0:
                continue
            if f"generator{k}" not in nets:
                raise FewstepError(f"class {int(labels[rows[0]])} belongs to student {k}, which this run does not "
                                   f"train (method.only_students={info['trained']}); merge the runs of all "
                                   "students first: fewstep export --run RUN... --out MERGED")
            x = fewstep_sample(nets[f"generator{k}"], labels[rows], [seeds[int(i)] for i in rows],
                               tuple(info["shape"]), info["gen_sigmas"], opt.get("noise_scale"))
            if out is None:
                out = torch.empty(len(labels), *x.shape[1:], dtype=x.dtype, device=x.device)
            out[rows] = x
        return out

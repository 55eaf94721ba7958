"""Assemble an experiment (method + data + train config) from presets, a YAML file and key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fewstep.config import from_dict, load_yaml, merge, parse_overrides
from fewstep.errors import FewstepError
from fewstep.methods import get_method
from fewstep.methods.base import Method
from fewstep.presets import preset
from fewstep.tokenizers import DataConfig
from fewstep.trainer import TrainConfig, config_record

SECTIONS = ("method", "data", "train", "finetune")


@dataclass
class Experiment:
    method: Method
    train: TrainConfig
    record: dict
    # method/train changes of a next run that starts from this one's result (method.init_from); it may hold a
    # finetune section of its own, for the run after it; {} = none
    finetune: dict


def build_experiment(method_name: str, data: dict | None = None, config_file: str | None = None,
                     overrides: list[str] | None = None, extra_method: dict | None = None,
                     stage: int = 0) -> Experiment:
    """The experiment of run `stage` of its chain: 0 is the first run, and each later one applies the next nested
    finetune section on top of the run before it."""
    cls = get_method(method_name)
    raw: dict[str, Any] = {"method": dict(extra_method or {}), "data": {}, "train": {}}
    file_cfg = load_yaml(config_file) if config_file else {}
    over = parse_overrides(overrides or [])
    for src in (file_cfg, over):
        bad = set(src) - set(SECTIONS)
        if bad:
            raise FewstepError(f"unknown config section '{sorted(bad)[0]}'; sections are: {', '.join(SECTIONS)}")
    # the dataset decides the preset, so resolve it first (override > file > flag > default)
    data_raw = merge(merge({"name": "digits"}, {k: v for k, v in (data or {}).items() if v is not None}),
                     merge(file_cfg.get("data", {}), over.get("data", {})))
    raw = merge(raw, preset(method_name, str(data_raw.get("name"))))
    raw = merge(raw, file_cfg)
    raw = merge(raw, over)
    raw["data"] = data_raw
    can_start = cls.can_start_from_run()
    finetune = _finetune_section(raw.pop("finetune", None), method_name, can_start)
    for _ in range(stage):
        if not finetune:
            raise FewstepError(f"this config has no run {stage + 1}: its chain of finetune sections is shorter")
        finetune = dict(finetune)
        nested = finetune.pop("finetune", None)
        raw = merge(raw, finetune)
        finetune = _finetune_section(nested, method_name, can_start)
    method_raw = dict(raw.get("method", {}))
    if method_raw.pop("name", method_name) != method_name:
        raise FewstepError(f"config file is for method '{raw['method']['name']}', not '{method_name}'")
    data_cfg = from_dict(DataConfig, raw["data"], prefix="data.")
    method_cfg = from_dict(cls.Config, method_raw, prefix="method.")
    train_cfg = from_dict(TrainConfig, raw.get("train", {}), prefix="train.")
    method = cls(method_cfg, data_cfg)
    record = config_record(method_name, method_cfg, data_cfg, train_cfg)
    if finetune:
        record["finetune"] = finetune
    return Experiment(method, train_cfg, record, finetune)


def _finetune_section(section, method_name: str, can_start_from_run: bool) -> dict:
    """A checked finetune section, or {} where there is none or its train.steps is 0 (which switches it off, and the
    runs nested in it too)."""
    section = section or {}
    if not isinstance(section, dict) or set(section) - {"method", "train", "finetune"} or not all(
            isinstance(v, dict) for v in section.values()):
        raise FewstepError("a finetune section changes only method.* and train.* keys (and may nest a finetune section "
                           "for a further run), e.g. finetune.train.steps=250 finetune.method.teacher_cfg=1.25")
    if section and "steps" not in section.get("train", {}):
        raise FewstepError("a finetune section needs its own train.steps (0 switches it off), e.g. "
                           "finetune.train.steps=250")
    if not section.get("train", {}).get("steps", 0):
        return {}
    if not can_start_from_run:
        raise FewstepError(f"finetune: '{method_name}' cannot start from an earlier run (it has no method.init_from); "
                           "drop the finetune keys")
    return section

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
    # method/train changes of a second run that starts from this one's result (method.init_from); {} = none
    finetune: dict


def build_experiment(method_name: str, data: dict | None = None, config_file: str | None = None,
                     overrides: list[str] | None = None, extra_method: dict | None = None,
                     finetune_stage: bool = False) -> Experiment:
    """The experiment, or with `finetune_stage` its finetune section applied on top (the second run)."""
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
    finetune = raw.pop("finetune", None) or {}
    if not isinstance(finetune, dict) or set(finetune) - {"method", "train"} or not all(
            isinstance(v, dict) for v in finetune.values()):
        raise FewstepError("a finetune section changes only method.* and train.* keys, "
                           "e.g. finetune.train.steps=250 finetune.method.teacher_cfg=1.25")
    if not finetune.get("train", {}).get("steps", 0):
        finetune = {}  # finetune.train.steps=0 switches it off
    if finetune and not cls.can_start_from_run():
        raise FewstepError(f"finetune: '{method_name}' cannot start from an earlier run (it has no method.init_from); "
                           "drop the finetune keys")
    if finetune_stage:
        raw, finetune = merge(raw, finetune), {}
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

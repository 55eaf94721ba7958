"""Method registry. Adding a method = one file + one line here; the contract tests pick it up."""

from __future__ import annotations

from fewstep.methods.base import Method
from fewstep.methods.dimo import DiMO
from fewstep.methods.dmd2 import DMD2
from fewstep.methods.edm import EDM
from fewstep.methods.maskgit import MaskGIT
from fewstep.methods.msd import MSD
from fewstep.methods.vq import VQTokenizerMethod
from fewstep.registry import lookup

METHODS: dict[str, type[Method]] = {
    "maskgit": MaskGIT,
    "dimo": DiMO,
    "dmd2": DMD2,
    "edm": EDM,
    "msd": MSD,
    "vq": VQTokenizerMethod,
}


def get_method(name: str) -> type[Method]:
    return lookup("method", name, METHODS)

"""Registries are plain dicts; lookups fail with a one-line error that lists the valid names."""

from __future__ import annotations

import difflib
from typing import TypeVar

from fewstep.errors import FewstepError

T = TypeVar("T")


def lookup(kind: str, name: str, table: dict[str, T]) -> T:
    if name in table:
        return table[name]
    close = difflib.get_close_matches(str(name), list(table), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise FewstepError(f"unknown {kind} '{name}'{hint}; choose one of: {', '.join(sorted(table))}")

"""Progress bars for long work: live on a terminal, a line every 30 s in a log file (SLURM, CI, nohup).

``set_enabled(False)`` (the CLI's ``--quiet`` / ``--no-progress``) turns every bar off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

_ENABLED = {"bars": True}


def set_enabled(enabled: bool) -> None:
    """Turn lungcls's progress bars on or off for this process."""
    _ENABLED["bars"] = enabled


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    initial: int = 0,
) -> Any:
    """A tqdm bar on stderr; redrawn at most every 30 s when stderr is not a terminal, where its last line
    (at 100%) is always kept so a log shows where each pass ended."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not (enabled and _ENABLED["bars"]),
        file=sys.stderr,
        leave=leave or not interactive,
        mininterval=0.1 if interactive else 30.0,
        dynamic_ncols=interactive,
        initial=initial,
    )

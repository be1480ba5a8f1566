"""Progress bars for long work: live on a terminal, a line every 30 s in a log file (SLURM, CI, nohup)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, leave: bool = True) -> Any:  # fmt: skip
    """A tqdm bar on stderr; redrawn at most every 30 s when stderr is not a terminal."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, leave=leave,
                mininterval=0.1 if interactive else 30.0, dynamic_ncols=interactive)  # fmt: skip

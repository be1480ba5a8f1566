"""Expand what a user passes on the command line (files, folders, globs) into image paths."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from .io import is_image_file


def expand_inputs(items: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files as given, folders searched recursively for image files, globs expanded (``**`` allowed).

    Returns:
        (paths, problems): paths in a stable order without repeats; problems lists each input that
        matched nothing, as ``{"path", "reason"}``.
    """
    paths: list[Path] = []
    problems: list[dict[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                problems.append({"path": str(p), "reason": "folder holds no image files"})
            paths += found
        elif p.exists():
            paths.append(p)
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not found:
                problems.append({"path": str(item), "reason": "pattern matched no files"})
            paths += found
        else:
            problems.append({"path": str(p), "reason": "no such file or folder"})
    return list(dict.fromkeys(paths)), problems


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output names for ``paths``: each file's stem, with ``_2``, ``_3``... where stems repeat."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(p.stem if seen[p.stem] == 1 else f"{p.stem}_{seen[p.stem]}")
    return names

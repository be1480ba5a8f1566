"""The one output policy of everything lungcls writes for a user (commands and the library functions behind them).

- An output file that exists, or an output folder that holds anything, is refused unless ``force`` (the
  command line's ``--force``): one clear error, nothing touched.
- A path of the wrong kind (a file where a folder goes, or the other way round) is refused, even with ``force``.
- With ``force``, a file is replaced atomically (the old one until the new one is complete); a folder's
  outputs are written into a staging folder beside it and moved into place only when all of them are
  complete: the entries this kind of output consists of (e.g. ``masks/``, ``overlays/``, ``crops/``,
  ``segment.csv``) replace the old ones, stale ones are removed, the CSV moves last, and anything else
  in the folder is left alone. An error or Ctrl-C before that leaves the folder as it was.

Training run folders have their own rule (``--resume`` / ``--overwrite``, :func:`lungcls.runs.start_run`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import LungclsError


class OutputExistsError(LungclsError):
    """An output is in the way (or of the wrong kind); nothing was written."""


def check_file(path: str | Path, force: bool) -> Path:
    """Refuse to write the file ``path`` over an existing one (unless ``force``) or over a folder.

    Raises:
        OutputExistsError: says what is there and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file name for this output")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force to replace it, or choose another name")
    return path


def check_folder(path: str | Path, force: bool) -> Path:
    """Refuse to write into the folder ``path`` when it holds anything (unless ``force``), or when it is a file.

    Raises:
        OutputExistsError: says what is there and what to do.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} is a file; give a folder for this output")
    if path.is_dir() and any(path.iterdir()) and not force:
        shown = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise OutputExistsError(
            f"{path} is not empty ({shown}); pass --force to replace these outputs, or choose another folder"
        )
    return path


@contextmanager
def staged_folder(path: str | Path, force: bool, entries: Sequence[str]) -> Iterator[Path]:
    """Check ``path`` (:func:`check_folder`), then yield a staging folder to write the outputs into; when the block
    ends well, move them into ``path``.

    Args:
        entries: the names this kind of output consists of (files or folders directly in ``path``): the old ones
            are replaced or, when not written this time, removed; other files in ``path`` stay. Entries ending in
            ``.csv`` move last.
    """
    path = check_folder(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging
        _move_in(staging, path, entries)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_in(staging: Path, path: Path, entries: Sequence[str]) -> None:
    written = {p.name for p in staging.iterdir()}
    unknown = written - set(entries)
    if unknown:
        raise RuntimeError(f"wrote {sorted(unknown)} outside the declared outputs {list(entries)}")
    if not path.exists():
        os.replace(staging, path)  # a new folder: one rename
        staging.mkdir()  # for the caller's cleanup
        return
    trash = staging / ".replaced"
    trash.mkdir()
    for name in sorted(entries, key=lambda n: n.endswith(".csv")):  # tables last: never ahead of their files
        old, new = path / name, staging / name
        if old.exists() or old.is_symlink():
            os.replace(old, trash / name)
        if name in written:
            os.replace(new, old)

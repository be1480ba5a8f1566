"""``lungcls predict`` across processes and machines: ``torchrun --nproc_per_node N -m lungcls predict ...``.

The inputs (expanded and ordered as one process would) are cut into parts of ``shard_size`` files; part ``i`` goes to
rank ``i mod world size``. Each rank predicts its parts on its own device (``cuda:LOCAL_RANK`` on a GPU machine) and
writes each finished part as ``OUT.parts/part-NNNNNN.csv`` (atomically; explanation pictures into
``OUT.parts/explain/``). When every rank is done, rank 0 merges the parts, in order, into exactly the outputs one
process writes (``predictions.csv``, ``decisions.md``, ``explain/``), through the same output policy, and removes
``OUT.parts``. After a crash the same command goes on: the parts already written are skipped. ``OUT.parts`` records
what it was started with; another command's parts are refused, not mixed in. On several machines ``OUT`` must be on
a file system they share.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .atomic import write_json, write_text
from .errors import LungclsError
from .output_policy import staged_folder
from .outputs import PREDICT_OUTPUTS, decisions_markdown, predict_files, prediction_fields, unique_names, write_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes (from torchrun's environment)."""

    rank: int
    world: int
    local: int

    @classmethod
    def from_env(cls) -> Ranks | None:
        """The ranks torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None for a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, asked: str | None) -> str:
        """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is there and nothing else was asked, else ``asked``."""
        import torch

        if asked in (None, "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local}"
        return asked or "cpu"

    def start(self) -> None:
        """Join the process group (gloo: it waits on any device); a long timeout, since parts take what they take."""
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timedelta(days=1))

    @staticmethod
    def wait() -> None:
        """Every rank reaches this point before any goes on."""
        import torch.distributed as dist

        dist.barrier()


def parts_folder(out: Path) -> Path:
    """Where the ranks write their finished parts: ``OUT.parts`` beside ``OUT``."""
    return out.with_name(out.name + ".parts")


def predict_sharded(
    paths: Sequence[Path],
    pipe,
    out: str | Path,
    ranks: Ranks,
    shard_size: int = 256,
    force: bool = False,
    explain: bool = False,
    cam_method: str = "gradcam",
    cam_target: str | None = None,
    progress: bool = True,
) -> list[dict] | None:
    """This rank's share of ``lungcls predict`` (see the module's docstring); rank 0 returns the merged rows, the
    others None.

    Raises:
        LungclsError: ``OUT.parts`` holds the parts of another command (other inputs, model or options).
    """
    out = Path(out)
    parts = parts_folder(out)
    names = dict(zip(paths, unique_names(paths)))
    record = {"inputs": [str(p) for p in paths], "model": pipe.classifier.info.get("source", {}).get("sha256"),
              "shard_size": shard_size, "explain": explain, "cam_method": cam_method, "cam_target": cam_target}  # fmt: skip
    if ranks.rank == 0:
        _claim(parts, record)
    ranks.wait()
    if json.loads((parts / "started.json").read_text(encoding="utf-8")) != record:
        raise LungclsError(f"{parts}: changed by another command while this one started")
    shards = [list(paths[i : i + shard_size]) for i in range(0, len(paths), shard_size)]
    mine = range(ranks.rank, len(shards), ranks.world)
    done = [i for i in mine if _part(parts, i).is_file()]
    if done:
        log.info("rank %d: %d of its %d parts were done before; skipped", ranks.rank, len(done), len(mine))
    fields = prediction_fields(pipe.class_names, explain)
    for i in mine:
        if i in done:
            continue
        rows = predict_files(shards[i], pipe, explain_dir=parts / "explain" if explain else None,
                             progress=progress and ranks.rank == 0, cam_method=cam_method, cam_target=cam_target,
                             names=names)  # fmt: skip
        write_csv(_part(parts, i), rows, fields)
    ranks.wait()
    rows = _merge(parts, len(shards), out, force, fields) if ranks.rank == 0 else None
    ranks.wait()
    return rows


def _part(parts: Path, i: int) -> Path:
    return parts / f"part-{i:06d}.csv"


def _claim(parts: Path, record: dict) -> None:
    """Start ``parts`` with what this command is, or check that the parts there are this command's."""
    started = parts / "started.json"
    if started.is_file():
        if json.loads(started.read_text(encoding="utf-8")) != record:
            raise LungclsError(f"{parts} holds the parts of another command (other inputs, model or options): "
                               "finish that one, or remove the folder")  # fmt: skip
        return
    parts.mkdir(parents=True, exist_ok=True)
    write_json(started, record)


def _merge(parts: Path, n: int, out: Path, force: bool, fields: list[str]) -> list[dict]:
    """The parts, in order, written as one process writes ``predict``'s outputs; then ``parts`` is removed."""
    rows: list[dict] = []
    for i in range(n):
        with open(_part(parts, i), newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    with staged_folder(out, force, PREDICT_OUTPUTS) as staging:
        if (parts / "explain").is_dir():
            shutil.move(str(parts / "explain"), str(staging / "explain"))
        write_text(staging / "decisions.md", decisions_markdown(rows))
        write_csv(staging / "predictions.csv", rows, fields)
    shutil.rmtree(parts)
    return rows

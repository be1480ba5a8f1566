"""Where trained models live, and the one place that reads and writes them.

A stage's model is a folder holding ``config.json`` (what it is, how it was trained, where its data
came from) and ``model.safetensors`` (its weights), plus ``images.json`` (content hashes of the
images it was trained, validated and tested on, where recorded). Such a folder is

- a **run folder** written by ``train-seg`` / ``train-cls`` (with its history and checkpoints);
- the ``segmenter/`` or ``classifier/`` folder of a **bundle** (``pipeline.json`` beside them);
- a **built-in model** shipped inside the package (:mod:`lungcls.builtin`), named by its name.

:func:`read_model` resolves any of these for a stage (``"segmenter"`` or ``"classifier"``) and
says what it found when it is none of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import write_bytes, write_json
from .checkpoint import read_json, refuse_pickle
from .errors import CheckpointError

KINDS = ("segmenter", "classifier")


@dataclass
class ModelFiles:
    """A saved stage model as read from disk or from the package.

    Attributes:
        config: the whole ``config.json``.
        weights: the state dict (CPU tensors, stored dtype).
        origin: ``"run"``, ``"bundle"`` or ``"builtin"``.
        name: the built-in model's name, else the folder's path as given.
        folder: the folder on disk (None for a built-in model read from a zipped package).
        sha256: SHA-256 of the weights file's bytes (what bundles and runs record to name a model).
        images: content hashes of the images per split (``Train``, ``Val``, ``Test``), or None.
    """

    config: dict
    weights: dict[str, torch.Tensor]
    origin: str
    name: str
    folder: Path | None
    sha256: str
    images: dict[str, list[str]] | None


def read_model(spec: str | Path, kind: str) -> ModelFiles:
    """Read the ``kind`` model that ``spec`` names: a built-in model's name, a run folder, or a bundle.

    Raises:
        CheckpointError: ``spec`` is none of these (the message says what was found there), or
            holds a model of the other stage, or its files are missing or not safetensors + JSON.
    """
    from . import builtin

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if isinstance(spec, str) and builtin.is_builtin(spec):
        return builtin.read(spec, kind)
    folder, origin = locate(Path(spec), kind)
    config = read_json(folder / "config.json")
    found = config.get("kind")
    if found != kind:
        raise CheckpointError(f"{spec}: holds a {found or 'unknown'} model, not a {kind}")
    weights_file = folder / "model.safetensors"
    data = _read_bytes(weights_file)
    images = read_json(folder / "images.json") if (folder / "images.json").is_file() else None
    return ModelFiles(config, _load_safetensors(data, weights_file), origin, str(spec), folder,
                      hashlib.sha256(data).hexdigest(), images)  # fmt: skip


def locate(path: Path, kind: str) -> tuple[Path, str]:
    """The folder holding ``kind``'s ``config.json`` for a run folder or a bundle, and which it was.

    Raises:
        CheckpointError: "expects a run folder or bundle (found ...)".
    """
    if (path / "pipeline.json").is_file():
        sub = path / kind
        if not (sub / "config.json").is_file():
            raise CheckpointError(f"{path}: this bundle holds no {kind}")
        return sub, "bundle"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path, "run"
    raise CheckpointError(f"{path}: expects a {kind} run folder, a bundle or a built-in model name (found {describe(path)})")


def describe(path: Path) -> str:
    """A few words on what is at ``path``, for error messages."""
    from .builtin import names

    if not path.exists():
        hint = f"; built-in models: {', '.join(names())}" if names() else ""
        return f"nothing: no such file or folder{hint}"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return "a bare .safetensors file; pass the folder that holds it with its config.json"
        if suffix in (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp", ".webp"):
            return "an image file"
        return f"a {suffix or 'suffix-less'} file"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return "an empty folder"
    if (path / "config.json").is_file():
        return "a config.json without model.safetensors: training never saved a best model here"
    if (path / "last.json").is_file():
        return "an interrupted run without a best model; continue it with --resume"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return f"a folder with {shown}"


def write_model(folder: str | Path, config: dict, weights: dict[str, torch.Tensor],
                images: dict[str, list[str]] | None = None) -> str:  # fmt: skip
    """Write ``config.json``, ``model.safetensors`` (and ``images.json``) into ``folder``, atomically each.

    Returns:
        The SHA-256 of the weights file written.
    """
    from safetensors.torch import save

    folder = Path(folder)
    data = save({k: v.detach().to("cpu").contiguous() for k, v in weights.items()})
    write_bytes(folder / "model.safetensors", data)
    if images is not None:
        write_json(folder / "images.json", images)
    write_json(folder / "config.json", config)
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    refuse_pickle(path)
    return path.read_bytes()


def _load_safetensors(data: bytes, where: Any) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{where}: not a readable safetensors file ({e})") from None

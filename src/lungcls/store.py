"""The model store: the one place that reads and writes model files, and checks them before they are trusted.

A stage's model is a folder holding ``config.json`` (what it is, how it was trained, where its data came
from, the SHA-256 of its weights) and ``model.safetensors`` (its weights), plus ``images.json`` (content
hashes of the images it was trained, validated and tested on, where recorded). Such a folder is

- a **run folder** written by ``train-seg`` / ``train-cls`` (with its history and checkpoints);
- the ``segmenter/`` or ``classifier/`` folder of a **bundle** (``pipeline.json`` beside them);
- a **built-in model** shipped inside the package (:mod:`lungcls.builtin`), named by its name.

:func:`read_model` resolves any of these for a stage, refuses pickles, and checks the weights against
their recorded SHA-256; :func:`write_model` writes one. :func:`save_tensors` / :func:`load_tensors` are
the safetensors I/O of everything else (resumable checkpoints, weight files). :func:`linked_segmenter`
is the one answer to "where is the segmenter this classifier was trained with".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from . import builtin
from .atomic import write_bytes, write_json
from .config import from_dict
from .errors import CheckpointError, ConfigError

KINDS = ("segmenter", "classifier")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
T = TypeVar("T")


@dataclass
class ModelFiles:
    """A saved stage model as read from disk or from the package.

    Attributes:
        config: the whole ``config.json``.
        weights: the state dict (CPU tensors, stored dtype).
        origin: ``"run"``, ``"bundle"`` or ``"builtin"``.
        name: the built-in model's name, else the folder's path as given.
        folder: the folder on disk (None for a built-in model read from a zipped package).
        sha256: SHA-256 of the weights file's bytes (checked against the recorded one).
        images: content hashes of the images per split (``Train``, ``Val``, ``Test``), or None.
    """

    config: dict
    weights: dict[str, torch.Tensor]
    origin: str
    name: str
    folder: Path | None
    sha256: str
    images: dict[str, list[str]] | None

    def section(self, cls: type[T], key: str) -> T:
        """``config[key]`` as the dataclass ``cls``, every field type- and range-checked.

        Raises:
            CheckpointError: a bad value; the message names the file and the field.
        """
        try:
            return from_dict(cls, self.config.get(key, {}), f"{key}.")
        except ConfigError as e:
            raise CheckpointError(f"{self.where}: {e}") from None

    @property
    def where(self) -> str:
        """The model's ``config.json`` (or built-in name), for messages."""
        return str(self.folder / "config.json") if self.folder else f"built-in model {self.name!r}"

    @property
    def info(self) -> dict:
        """Everything the config says besides the model's own sections, plus where it was read from."""
        info = {k: v for k, v in self.config.items() if k not in ("model", "postprocess", "weights_sha256")}
        info["source"] = {"origin": self.origin, "name": self.name, "sha256": self.sha256}
        info["folder"] = str(self.folder) if self.folder else None
        return info


def read_model(spec: str | Path, kind: str) -> ModelFiles:
    """Read the ``kind`` model that ``spec`` names: a built-in model's name, a run folder, or a bundle.

    Raises:
        CheckpointError: ``spec`` is none of these (the message says what was found there), holds a model
            of the other stage, its files are missing, a pickle, or not what their recorded SHA-256 says.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    name = str(spec)
    if not Path(spec).exists() and builtin.is_builtin(name):
        return _read_builtin(name, kind)
    folder, origin, expected = locate(Path(spec), kind)
    config = read_json(folder / "config.json")
    found = config.get("kind")
    if found != kind:
        raise CheckpointError(f"{spec}: holds a {found or 'unknown'} model, not a {kind}")
    weights_file = folder / "model.safetensors"
    data = _read_bytes(weights_file)
    sha = _verify(data, weights_file, [config.get("weights_sha256"), *expected])
    images = read_json(folder / "images.json") if (folder / "images.json").is_file() else None
    return ModelFiles(config, _parse(data, weights_file), origin, name, folder, sha, images)


def write_model(
    folder: str | Path, config: dict, weights: dict[str, torch.Tensor], images: dict[str, list[str]] | None = None
) -> str:
    """Write ``model.safetensors``, ``images.json`` and ``config.json`` (with the weights' SHA-256) into
    ``folder``, each atomically, the config last.

    Returns:
        The SHA-256 of the weights file written.
    """
    folder = Path(folder)
    sha = save_tensors(folder / "model.safetensors", weights)
    if images is not None:
        write_json(folder / "images.json", images)
    write_json(folder / "config.json", {**config, "weights_sha256": sha})
    return sha


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors, atomically (contiguous CPU copies); returns the file's SHA-256."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (CPU tensors), checked against ``sha256`` when given.

    Raises:
        CheckpointError: missing file, a pickle (refused, never unpickled), a corrupt file, or another SHA-256.
    """
    path = Path(path)
    data = _read_bytes(path)
    _verify(data, path, [sha256])
    return _parse(data, path)


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Initial weights from a file: safetensors, or a torchvision ``.pth`` state dict (read with
    ``weights_only=True``, which runs no code).

    Raises:
        CheckpointError: missing, or not plain weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unsafe or corrupt pickle
        raise CheckpointError(
            f"{path}: not loadable as plain weights ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def read_json(path: str | Path) -> dict:
    """Read a JSON object from a file, with an error that names it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def refuse_pickle(path: str | Path) -> None:
    """Raise unless ``path`` may be a safetensors file: pickles are refused without being opened by pickle.

    Raises:
        CheckpointError: a pickle suffix, or pickle / ``torch.save`` bytes at the start of the file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{"
    plausible = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8
    if path.suffix.lower() not in PICKLE_SUFFIXES and plausible:
        return
    # pickle protocol 2+ starts with 0x80; torch.save zips start with PK
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path}: looks like a pickle checkpoint; lungcls loads only safetensors weights "
            "(pickles can run code when loaded)"
        )


def locate(path: Path, kind: str) -> tuple[Path, str, list[str | None]]:
    """The folder holding ``kind``'s ``config.json`` in a run folder or a bundle, which of the two it is,
    and the weights' SHA-256 that the bundle's ``pipeline.json`` records (if any).

    Raises:
        CheckpointError: "expects a run folder or bundle (found ...)".
    """
    if (path / "pipeline.json").is_file():
        sub = path / kind
        if not (sub / "config.json").is_file():
            raise CheckpointError(f"{path}: this bundle holds no {kind}")
        return sub, "bundle", [_bundle_sha(path, kind)]
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        inside = path.name in KINDS and (path.parent / "pipeline.json").is_file()
        return path, "bundle" if inside else "run", [_bundle_sha(path.parent, path.name)] if inside else []
    raise CheckpointError(
        f"{path}: expects a {kind} run folder, a bundle or a built-in model name (found {describe(path, kind)})"
    )


def describe(path: Path, kind: str | None = None) -> str:
    """A few words on what is at ``path``, for error messages."""
    if not path.exists():
        return f"nothing: no such file or folder; {builtin.listing(kind)}"
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
    if (path / "last.json").is_file():
        return "an interrupted run without a best model yet; continue it with --resume"
    if (path / "config.json").is_file():
        return "a config.json without model.safetensors: training never saved a best model here"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return f"a folder with {shown}"


def segmenter_record(source: dict, out: Path) -> dict:
    """How a classifier run names the segmenter it was trained with: a built-in name, or the run folder's path
    relative to ``out`` (so runs move together) and absolute, with the weights' SHA-256."""
    record = {"origin": source.get("origin"), "sha256": source.get("sha256")}
    if source.get("origin") == "builtin":
        return record | {"name": source.get("name")}
    path = Path(source.get("name", ""))
    record["path"] = os.path.relpath(path.resolve(), out.resolve()) if path.exists() else str(path)
    record["absolute"] = str(path.resolve()) if path.exists() else None
    return record


def linked_segmenter(record: dict | None, folder: str | Path | None) -> str | Path | None:
    """The one resolver of "where is the segmenter this classifier was trained with": a built-in name, or
    its folder (looked for relative to the classifier's ``folder``, then at its absolute path); None for a
    raw classifier or one trained on the dataset's masks. Used by loading, resuming and ``Pipeline.load``.

    Raises:
        CheckpointError: the segmenter is no longer where the record says; says how to go on.
    """
    if not record:
        return None
    if record.get("origin") == "builtin":
        return record["name"]
    here = Path(folder) if folder else None
    candidates = [here / record["path"]] if here and record.get("path") else []
    candidates += [Path(record["absolute"])] if record.get("absolute") else []
    for c in candidates:
        if (c / "config.json").is_file():
            return Path(os.path.normpath(c))
    raise CheckpointError(
        f"this classifier was trained on masks of the segmenter at {record.get('path')} (relative to {here}; "
        f"weights sha256 {str(record.get('sha256'))[:12]}), which is not there any more: pass it with --seg-model "
        "RUN, or keep both stages together in a bundle (`lungcls bundle`)"
    )


def _read_builtin(name: str, kind: str) -> ModelFiles:
    folder = builtin.folder(name)
    config = json.loads(folder.joinpath("config.json").read_text(encoding="utf-8"))
    if config.get("kind") != kind:
        raise CheckpointError(f"{name!r} is a built-in {config.get('kind')}, not a {kind}; {builtin.listing(kind)}")
    data = folder.joinpath("model.safetensors").read_bytes()
    sha = _verify(data, f"built-in model {name!r}", [config.get("weights_sha256")])
    images_file = folder.joinpath("images.json")
    images = json.loads(images_file.read_text(encoding="utf-8")) if images_file.is_file() else None
    return ModelFiles(config, _parse(data, name), "builtin", name, builtin.on_disk(folder), sha, images)


def _bundle_sha(bundle: Path, kind: str) -> str | None:
    entry = read_json(bundle / "pipeline.json").get(kind) or {}
    return entry.get("sha256") if isinstance(entry, dict) else None


def _verify(data: bytes, where: Any, expected: list[str | None]) -> str:
    sha = hashlib.sha256(data).hexdigest()
    for want in expected:
        if want and want != sha:
            raise CheckpointError(
                f"{where}: its SHA-256 ({sha[:12]}...) is not the one recorded when it was saved ({want[:12]}...): "
                "the file was changed or damaged; restore it, or train the model again"
            )
    return sha


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    refuse_pickle(path)
    return path.read_bytes()


def _parse(data: bytes, where: Any) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{where}: not a readable safetensors file ({e})") from None

"""Checkpoints: safetensors weights + a JSON config, written atomically; pickles are refused.

A run folder holds::

    config.json              what the model is and how it was trained (written at start, updated with metrics)
    model.safetensors        the best weights (on the validation metric)
    last.safetensors         the latest weights, and optimiser state under ``optim.*`` keys
    last.json                where training stands: epoch, step, best metric, history, optimiser groups
    history.csv / .json      metrics per epoch
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .atomic import write_bytes
from .errors import CheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under ``torch.compile`` or DistributedDataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None or not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically (contiguous CPU copies)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_bytes(path, save(tensors, metadata=metadata))  # the same file mode as every other file lungcls writes


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (CPU tensors).

    Raises:
        CheckpointError: missing file, a pickle (refused, never unpickled), or a corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    refuse_pickle(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def save_model(path: str | Path, model: torch.nn.Module) -> None:
    """Write a model's weights (unwrapped from compile/DDP) as safetensors."""
    save_weights(path, unwrap(model).state_dict())


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> torch.nn.Module:
    """Load ``state`` into ``model`` strictly (names and shapes must match), in the model's dtype.

    Weights of encoder stages the model was built without (:data:`lungcls.models.unet.STRIPPED`; saved
    by older versions) are dropped first.
    """
    from .models.unet import STRIPPED

    model = unwrap(model)
    stripped = tuple(getattr(model, STRIPPED, ()))
    if stripped:
        state = {k: v for k, v in state.items() if not k.startswith(stripped)}
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    return model


def load_model(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load a safetensors file into ``model`` (see :func:`load_state`)."""
    return load_state(model, load_weights(path), path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split an optimiser's state into tensors (for safetensors) and JSON-ready param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_json(path: str | Path) -> dict:
    """Read a JSON file, with an error that names it."""
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
    if path.suffix.lower() not in PICKLE_SUFFIXES and len(head) == 9 and head[8:9] == b"{" \
            and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return
    # pickle protocol 2+ starts with 0x80; torch.save zips start with PK
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path}: looks like a pickle checkpoint; lungcls loads only safetensors weights "
            "(pickles can run code when loaded)"
        )

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
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, write_json
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (CPU tensors).

    Raises:
        CheckpointError: missing file, a pickle (refused, never unpickled), or a corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(path):
        raise CheckpointError(
            f"{path}: looks like a pickle checkpoint; lungcls loads only safetensors weights "
            "(pickles can run code when loaded)"
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def save_model(path: str | Path, model: torch.nn.Module) -> None:
    """Write a model's weights (unwrapped from compile/DDP) as safetensors."""
    save_weights(path, unwrap(model).state_dict())


def load_model(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load safetensors weights into ``model`` (strict: names and shapes must match)."""
    state = load_weights(path)
    try:
        unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    return model


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


def write_config(path: str | Path, config: dict) -> None:
    """Write a run's JSON config atomically."""
    write_json(path, config)


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    # pickle protocol 2+ starts with 0x80; torch.save zips start with PK
    return head[:1] == b"\x80" or head[:2] == b"PK"

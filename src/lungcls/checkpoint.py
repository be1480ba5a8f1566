"""Module state in and out of plain tensors: what a checkpoint holds, whatever file it goes to.

File I/O lives in :mod:`lungcls.store` (safetensors + JSON, pickles refused). A run folder holds::

    config.json              what the model is and how it was trained (with the SHA-256 of its weights)
    model.safetensors        the best weights (on the validation metric)
    last.safetensors         the latest weights, optimiser state under ``optim.*`` keys, EMA under ``ema.*``
    last.json                where training stands: epoch, step, best metric, history, optimiser groups
    history.csv / .json      metrics per epoch
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under ``torch.compile`` or DistributedDataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None or not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of a model's weights (unwrapped from compile/DDP)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unwrap(model).state_dict().items()}


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> torch.nn.Module:
    """Load ``state`` into ``model`` strictly (names and shapes must match), in the model's dtype.

    Raises:
        CheckpointError: the weights do not fit the model; names ``where`` they came from.
    """
    model = unwrap(model)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit this model ({str(e).splitlines()[0]})") from None
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

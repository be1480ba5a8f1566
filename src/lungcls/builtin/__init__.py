"""Built-in models shipped inside the package: a lung and an infection segmenter that work right after
``pip install``.

Each lives in a sub-folder named after the model (``config.json`` with the SHA-256 of its weights,
``model.safetensors`` stored in half precision and loaded as float32, ``images.json`` with the content
hashes of its training images, ``MODEL_CARD.md``). They are found through :mod:`importlib.resources`,
so they work from a wheel, an editable install or a zipped package, and nothing ever touches the
network. This module finds them; :func:`lungcls.store.read_model` reads them, like any other model.

    lungcls models                         # list them
    lungcls segment scan.png --out out/    # uses DEFAULT
    Segmenter.load("unet-r18-covidqu")
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

#: the model ``lungcls segment`` and ``train-cls --mode masked`` use when no other is given
DEFAULT = "unet-r18-covidqu"
#: the infection segmenter ``lungcls segment --infection`` and ``Pipeline.load(..., infection=True)`` use
INFECTION = "unet-r18-infection"


def _root():
    return resources.files(__name__)


def names(kind: str | None = None) -> list[str]:
    """The built-in models in this installation (of one stage, ``"segmenter"`` or ``"classifier"``, if given)."""
    found = sorted(p.name for p in _root().iterdir() if p.is_dir() and p.joinpath("config.json").is_file())
    return [n for n in found if kind is None or _config(n).get("kind") == kind]


def is_builtin(name: str) -> bool:
    """True when ``name`` is a built-in model's name (and not a path)."""
    return "/" not in name and "\\" not in name and name in names()


def listing(kind: str | None = None) -> str:
    """Words for error messages: the built-in models of a stage, or that there are none."""
    what = f"built-in {kind}s" if kind else "built-in models"
    found = names(kind)
    if found:
        return f"{what}: {', '.join(found)}"
    others = ", ".join(f"{n} ({_config(n).get('kind')})" for n in names())
    return f"lungcls ships no {what}" + (f" (its built-in models: {others})" if others else "")


def card(name: str) -> str:
    """The model card (Markdown) of built-in model ``name``."""
    return folder(name).joinpath("MODEL_CARD.md").read_text(encoding="utf-8")


def summary(name: str) -> dict:
    """Name, architecture, working size, training data and headline Dice of ``name`` (from its config)."""
    return {"name": name, **_config(name).get("builtin", {})}


def folder(name: str) -> Any:
    """The package resource (a Traversable) holding built-in model ``name``.

    Raises:
        CheckpointError: no built-in model of that name.
    """
    if name not in names():
        raise CheckpointError(f"no built-in model named {name!r} ({listing()})")
    return _root().joinpath(name)


def on_disk(resource: Any) -> Path | None:
    """A resource's folder on disk, or None when the package is zipped."""
    try:
        path = Path(str(resource))
    except (TypeError, ValueError):
        return None
    return path if path.is_dir() else None


def _config(name: str) -> dict:
    return json.loads(_root().joinpath(name).joinpath("config.json").read_text(encoding="utf-8"))

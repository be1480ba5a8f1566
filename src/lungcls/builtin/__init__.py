"""Built-in models shipped inside the package: lung segmenters that work right after ``pip install``.

Each lives in a sub-folder named after the model (``config.json``, ``model.safetensors`` stored in
half precision and loaded as float32, ``images.json`` with the content hashes of its training
images, ``MODEL_CARD.md``). They are read through :mod:`importlib.resources`, so they work from a
wheel, an editable install or a zipped package, and nothing ever touches the network.

    lungcls models                         # list them
    lungcls segment scan.png --out out/    # uses DEFAULT
    Segmenter.load("unet-r18-covidqu")
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

from ..errors import CheckpointError

#: the model ``lungcls segment`` and ``train-cls --mode masked`` use when no other is given
DEFAULT = "unet-r18-covidqu"


def _root():
    return resources.files(__name__)


def names() -> list[str]:
    """The built-in models in this installation."""
    return sorted(p.name for p in _root().iterdir() if p.is_dir() and p.joinpath("config.json").is_file())


def is_builtin(name: str) -> bool:
    """True when ``name`` is a built-in model's name (and not a path)."""
    return "/" not in name and "\\" not in name and name in names()


def card(name: str) -> str:
    """The model card (Markdown) of built-in model ``name``."""
    return _folder(name).joinpath("MODEL_CARD.md").read_text(encoding="utf-8")


def summary(name: str) -> dict:
    """Name, architecture, working size, training data and headline Dice of ``name`` (from its config)."""
    config = json.loads(_folder(name).joinpath("config.json").read_text(encoding="utf-8"))
    return {"name": name, **config.get("builtin", {})}


def read(name: str, kind: str = "segmenter"):
    """Read built-in model ``name`` as :class:`lungcls.runs.ModelFiles`.

    Raises:
        CheckpointError: unknown name, or ``kind`` is not the model's stage.
    """
    from safetensors.torch import load

    from ..runs import ModelFiles

    folder = _folder(name)
    config = json.loads(folder.joinpath("config.json").read_text(encoding="utf-8"))
    if config.get("kind") != kind:
        raise CheckpointError(f"built-in model {name!r} is a {config.get('kind')}, not a {kind}")
    data = folder.joinpath("model.safetensors").read_bytes()
    images_file = folder.joinpath("images.json")
    images = json.loads(images_file.read_text(encoding="utf-8")) if images_file.is_file() else None
    on_disk = None
    try:
        from pathlib import Path

        on_disk = Path(str(folder)) if Path(str(folder)).is_dir() else None
    except (TypeError, ValueError):
        pass
    return ModelFiles(config, load(data), "builtin", name, on_disk, hashlib.sha256(data).hexdigest(), images)


def _folder(name: str):
    if name not in names():
        known = ", ".join(names()) or "none in this installation"
        raise CheckpointError(f"no built-in model named {name!r} (built-in models: {known})")
    return _root().joinpath(name)

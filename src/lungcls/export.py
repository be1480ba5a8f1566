"""Export a pipeline's two networks to ONNX (dynamic batch), normalisation included.

Each exported graph takes float32 (N, 1, S, S) images in [0, 1] and returns probabilities:
``segmenter.onnx`` -> lung probability (N, 1, S, S); ``classifier.onnx`` -> class probabilities
(N, K). Crop-and-mask and post-processing stay outside (``export.json`` records their settings).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .atomic import atomic_path, write_json
from .errors import LungclsError
from .pipeline import Pipeline
from .preprocess import normalize


class _WithPreprocessing(torch.nn.Module):
    """[0, 1] images -> probabilities: the stage's normalisation, its network, its output head (and the
    classifier's calibration temperature)."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float, head: str, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.mean, self.std, self.head, self.temperature = model, mean, std, head, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(normalize(x, self.mean, self.std))
        return torch.sigmoid(y) if self.head == "sigmoid" else torch.softmax(y / self.temperature, dim=1)


def wrapped(pipe: Pipeline) -> dict[str, tuple[torch.nn.Module, int]]:
    """{name: (module taking [0, 1] images and returning probabilities, input size)}: CPU float32 copies in eval
    mode (the pipeline's own models stay where they are)."""
    import copy

    out = {}
    if pipe.segmenter is not None:
        c = pipe.segmenter.cfg
        out["segmenter"] = (
            _WithPreprocessing(copy.deepcopy(pipe.segmenter.model).float().cpu().eval(), c.mean, c.std, "sigmoid"),
            c.image_size,
        )
    c = pipe.classifier.cfg
    out["classifier"] = (
        _WithPreprocessing(copy.deepcopy(pipe.classifier.model).float().cpu().eval(), c.mean, c.std, "softmax", c.temperature),
        c.image_size,
    )
    return out


def export_onnx(pipe: Pipeline, out: str | Path, opset: int = 17) -> list[Path]:
    """Write ``segmenter.onnx``, ``classifier.onnx`` and ``export.json`` into ``out``; returns the ONNX paths.

    Raises:
        LungclsError: the ``export`` extra (onnx) is not installed.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise LungclsError("ONNX export needs the onnx package: pip install 'lungcls[export]'") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (module, size) in wrapped(pipe).items():
        example = torch.rand(2, 1, size, size)
        with atomic_path(out / f"{name}.onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=["images"],
                output_names=["probabilities"], dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            )  # fmt: skip
        written.append(out / f"{name}.onnx")
    write_json(out / "export.json", {
        "format": "onnx", "opset": opset, "input": "float32 (N, 1, S, S) in [0, 1]",
        "segmenter": {"size": pipe.segmenter.cfg.image_size, "postprocess": vars(pipe.segmenter.post)} if pipe.segmenter else None,
        "classifier": {"size": pipe.classifier.cfg.image_size, "mode": pipe.mode, "margin": pipe.classifier.cfg.margin,
                       "working_size": pipe.size, "class_names": pipe.class_names,
                       "temperature": pipe.classifier.cfg.temperature},
    })  # fmt: skip
    return written

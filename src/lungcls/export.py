"""Export a pipeline's two networks to ONNX (dynamic batch), normalisation included.

Each exported graph takes float32 (N, 1, S, S) images in [0, 1] and returns probabilities:
``segmenter.onnx`` -> lung probability (N, 1, S, S); ``classifier.onnx`` -> class probabilities
(N, K). Crop-and-mask and post-processing stay outside (``export.json`` records their settings).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .atomic import write_json
from .cls.calibration import calibrated
from .cls.task import ClassificationTask
from .errors import LungclsError
from .output_policy import staged_folder
from .pipeline import Pipeline
from .seg.task import SegmentationTask


class _WithPreprocessing(torch.nn.Module):
    """[0, 1] images -> probabilities: the stage's Task (its normalisation and network), then its output head
    (the segmenter's sigmoid; the classifier's calibrated softmax)."""

    def __init__(self, task: SegmentationTask | ClassificationTask, temperature: float | None = None) -> None:
        super().__init__()
        self.task, self.model, self.temperature = task, task.model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.task.logits(self.task.normalize(x))
        return torch.sigmoid(y) if self.temperature is None else calibrated(y, self.temperature)


def wrapped(pipe: Pipeline) -> dict[str, tuple[torch.nn.Module, int]]:
    """{name: (module taking [0, 1] images and returning probabilities, input size)}: CPU float32 copies in eval
    mode (the pipeline's own models stay where they are)."""
    import copy

    cpu = torch.device("cpu")
    out = {}
    if pipe.segmenter is not None:
        c = pipe.segmenter.cfg
        net = copy.deepcopy(pipe.segmenter.model).float().eval()
        out["segmenter"] = (_WithPreprocessing(SegmentationTask(net, c, cpu, channels_last=False)), c.image_size)
    c = pipe.classifier.cfg
    net = copy.deepcopy(pipe.classifier.model).float().eval()
    out["classifier"] = (
        _WithPreprocessing(ClassificationTask(net, c, cpu, channels_last=False), c.temperature),
        c.image_size,
    )
    return out


EXPORT_OUTPUTS = ("segmenter.onnx", "classifier.onnx", "export.json")


def export_onnx(pipe: Pipeline, out: str | Path, opset: int = 17, force: bool = False) -> list[Path]:
    """Write ``segmenter.onnx``, ``classifier.onnx`` and ``export.json`` into ``out``; returns the ONNX paths.

    ``force`` replaces an earlier export in ``out``; else a folder that holds anything is refused
    (see :mod:`lungcls.output_policy`).

    Raises:
        LungclsError: the ``export`` extra (onnx) is not installed; ``out`` is in the way.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise LungclsError("ONNX export needs the onnx package: pip install 'lungcls[export]'") from None
    with staged_folder(out, force, EXPORT_OUTPUTS) as staging:
        names = _export(pipe, staging, opset)
    return [Path(out) / n for n in names]


def _export(pipe: Pipeline, out: Path, opset: int) -> list[str]:
    written = []
    for name, (module, size) in wrapped(pipe).items():
        example = torch.rand(2, 1, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
            torch.onnx.export(
                module,
                (example,),
                str(out / f"{name}.onnx"),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            )
        written.append(f"{name}.onnx")
    write_json(
        out / "export.json",
        {
            "format": "onnx",
            "opset": opset,
            "input": "float32 (N, 1, S, S) in [0, 1]",
            "segmenter": {"size": pipe.segmenter.cfg.image_size, "postprocess": vars(pipe.segmenter.post)}
            if pipe.segmenter
            else None,
            "classifier": {
                "size": pipe.classifier.cfg.image_size,
                "mode": pipe.mode,
                "margin": pipe.classifier.cfg.margin,
                "working_size": pipe.size,
                "class_names": pipe.class_names,
                "temperature": pipe.classifier.cfg.temperature,
            },
        },
    )
    return written

"""``Pipeline``: stage 1 (lung U-Net) and stage 2 (crop-and-mask + ResNet) as one object.

    from lungcls import Pipeline
    pipe = Pipeline.load("bundle/")
    for r in pipe.predict(["a.png", "b.png"]):
        print(r.label, r.probs, r.lung_fraction, r.flags)

A bundle folder holds ``pipeline.json`` (working size, mode, class names, versions),
``segmenter/`` and ``classifier/`` (each ``config.json`` + ``model.safetensors``) and a generated
``MODEL_CARD.md``. Research use only: not a diagnostic device.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .atomic import write_json, write_text
from .checkpoint import read_json
from .cls.classifier import Classifier
from .config import ClassifierConfig, SegmenterConfig, TrainConfig
from .errors import CheckpointError, ImageReadError, LungclsError
from .io import read_image, resize_image
from .seg.segmenter import Segmenter, describe_batch

ImageLike = str | Path | np.ndarray | torch.Tensor


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        label: predicted class name; probs: {class name: probability}.
        mask: uint8 (S, S) lung mask in {0, 1} at the working size (None without a segmenter).
        box: lung bounding box (x0, y0, x1, y1) at the working size, or None.
        lung_fraction: share of the image that is lung.
        flags: e.g. ``no-lung``, ``one-lung-field``, ``empty-mask-raw-used``, ``unreadable``.
        error: why the image could not be read (file and reason), else None.
    """

    label: str
    probs: dict[str, float]
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None
    lung_fraction: float
    flags: list[str] = field(default_factory=list)
    error: str | None = None


class Pipeline:
    """Segment, crop-and-mask and classify CXRs in batches on the pipeline's device.

    Args:
        segmenter: a stage-1 :class:`Segmenter` (may be None for a ``raw`` classifier).
        classifier: a stage-2 :class:`Classifier`; its config fixes the mode and working size.
    """

    def __init__(self, segmenter: Segmenter | None, classifier: Classifier) -> None:
        if classifier.needs_masks and segmenter is None:
            raise LungclsError(f"a {classifier.cfg.mode!r} classifier needs a segmenter")
        self.segmenter, self.classifier = segmenter, classifier
        self.size = classifier.cfg.working_size

    @property
    def mode(self) -> str:
        """The classifier's input mode."""
        return self.classifier.cfg.mode

    @property
    def class_names(self) -> list[str]:
        """Class names, in the order of the probabilities."""
        return list(self.classifier.cfg.class_names)

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", batch_size: int | None = None) -> Pipeline:
        """Load a bundle (from :meth:`save`), or a ``train-cls`` run (its stage-1 run is found from its config)."""
        path = Path(path)
        if (path / "pipeline.json").is_file():
            meta = read_json(path / "pipeline.json")
            seg = Segmenter.load(path / "segmenter", device, batch_size=batch_size) if meta.get("segmenter") else None
            return cls(seg, Classifier.load(path / "classifier", device, batch_size=batch_size))
        if (path / "config.json").is_file() and read_json(path / "config.json").get("kind") == "classifier":
            clf = Classifier.load(path, device, batch_size=batch_size)
            seg = Segmenter.load(clf.seg_model, device, batch_size=batch_size) if clf.seg_model else None
            return cls(seg, clf)
        raise CheckpointError(f"{path}: neither a lungcls bundle (pipeline.json) nor a train-cls run")

    def save(self, path: str | Path, runs: dict[str, str | Path] | None = None, metrics: dict | None = None) -> Path:
        """Write a bundle folder: both stages' weights and configs, ``pipeline.json`` and ``MODEL_CARD.md``.

        Args:
            runs: the run folders the stages came from (``segmenter``, ``classifier``), whose
                ``config.json`` and ``model.safetensors`` are copied; default: the loaded ones.
            metrics: evaluation figures to quote in the model card.
        """
        path = Path(path)
        runs = dict(runs or {})
        for stage, obj in (("segmenter", self.segmenter), ("classifier", self.classifier)):
            if obj is None:
                continue
            source = runs.get(stage) or obj.run
            if source is None or not (Path(source) / "model.safetensors").is_file():
                raise CheckpointError(f"no run folder known for the {stage}; pass runs={{'{stage}': RUN}}")
            (path / stage).mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                tmp = path / stage / f".{name}.tmp"
                shutil.copyfile(Path(source) / name, tmp)
                tmp.replace(path / stage / name)
        meta = {
            "format": "lungcls-bundle/1",
            "lungcls": __version__,
            "mode": self.mode,
            "working_size": self.size,
            "class_names": self.class_names,
            "segmenter": self.segmenter is not None,
            "postprocess": vars(self.segmenter.post) if self.segmenter else None,
            "metrics": metrics or {},
        }
        write_json(path / "pipeline.json", meta)
        write_text(path / "MODEL_CARD.md", model_card(meta, read_json(path / "classifier" / "config.json")))
        return path

    @classmethod
    def train(
        cls,
        data: Sequence[str | Path],
        out: str | Path,
        mode: str = "masked",
        segmenter: SegmenterConfig | None = None,
        seg_train: TrainConfig | None = None,
        classifier: ClassifierConfig | None = None,
        cls_train: TrainConfig | None = None,
        progress: bool = True,
    ) -> Pipeline:
        """Train both stages in order (stage 2 on stage 1's predicted masks) and save a bundle in ``out/bundle``.

        Writes ``out/cache`` (the packed data, split by patient when the data has no split),
        ``out/segmenter`` and ``out/classifier`` (run folders) and ``out/bundle``.
        """
        from dataclasses import replace

        from .cls.train import train_classifier
        from .seg.train import train_segmenter

        out = Path(out)
        seg_cfg = segmenter or SegmenterConfig()
        cls_cfg = replace(classifier or ClassifierConfig(), mode=mode)
        train_segmenter(data, out / "segmenter", seg_cfg, seg_train, cache_dir=out / "cache", progress=progress)
        seg_run = out / "segmenter" if mode != "raw" else None
        cls_train = cls_train or TrainConfig(label_smoothing=0.1, class_weighting=True)
        train_classifier([out / "cache"], out / "classifier", cls_cfg, cls_train, seg_model=seg_run, progress=progress)
        pipe = cls.load(out / "classifier", device=cls_train.device)
        if pipe.segmenter is None:  # a raw classifier: keep the trained segmenter in the bundle all the same
            pipe.segmenter = Segmenter.load(out / "segmenter", device=cls_train.device)
        report = (
            read_json(out / "classifier" / "eval_test.json")
            if (out / "classifier" / "eval_test.json").is_file()
            else {}
        )
        metrics = {"test_accuracy": report["accuracy"], "test_macro_f1": report["macro_avg"]["f1"]} if report else {}
        pipe.save(
            out / "bundle", runs={"segmenter": out / "segmenter", "classifier": out / "classifier"}, metrics=metrics
        )
        return cls.load(out / "bundle", device=cls_train.device)

    # -- inference ----------------------------------------------------------------------------

    def images(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Any accepted input -> uint8 (N, 1, S, S) at the working size.

        Accepts a path, a uint8 array or tensor (H, W), (N, H, W) or (N, 1, H, W), or a list of
        these. Float arrays/tensors must be in [0, 1].

        Raises:
            ImageReadError: a path could not be read (the batch methods go on past it instead).
        """
        batch, slots = self.load_batch(images)
        for slot in slots:
            if isinstance(slot, ImageReadError):
                raise slot
        return batch

    def load_batch(self, images: ImageLike | Sequence[ImageLike]) -> tuple[torch.Tensor, list[int | ImageReadError]]:
        """Read what :meth:`images` accepts, going on past unreadable files.

        Returns:
            (batch uint8 (M, 1, S, S) of the readable images, one slot per input image: its row in
            the batch, or the :class:`ImageReadError` that stopped it).
        """
        if (
            isinstance(images, torch.Tensor)
            and images.dtype == torch.uint8
            and images.shape[1:] == (1, self.size, self.size)
        ):
            return images, list(range(len(images)))  # already a batch at the working size: used as it is
        items = images if isinstance(images, (list, tuple)) else [images]
        out: list[np.ndarray] = []
        slots: list[int | ImageReadError] = []
        for item in items:
            if isinstance(item, (str, Path)):
                try:
                    out.append(read_image(item, (self.size, self.size)))
                    slots.append(len(out) - 1)
                except ImageReadError as e:
                    slots.append(e)
                continue
            a = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if a.dtype != np.uint8:
                if a.min() < 0 or a.max() > 1:
                    raise ValueError(f"float images must be in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
                a = np.round(a * 255).astype(np.uint8)
            if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
                raise ValueError(f"got a colour array of shape {a.shape}; pass grayscale (H, W) images, or file paths")
            a = a.reshape((-1,) + a.shape[-2:]) if a.ndim in (3, 4) else a[None]
            if a.ndim != 3:
                raise ValueError(
                    f"expected an image (H, W) or a batch (N, H, W) / (N, 1, H, W), got shape {item.shape}"
                )
            for x in a:
                out.append(resize_image(np.ascontiguousarray(x), (self.size, self.size)))
                slots.append(len(out) - 1)
        batch = (
            torch.from_numpy(np.stack(out))[:, None]
            if out
            else torch.empty(0, 1, self.size, self.size, dtype=torch.uint8)
        )
        return batch, slots

    def segment(self, images: ImageLike | Sequence[ImageLike]) -> list[np.ndarray | None]:
        """Lung masks, uint8 (S, S) in {0, 1}, one per image (None for a file that could not be read)."""
        if self.segmenter is None:
            raise LungclsError("this pipeline has no segmenter")
        return [p.mask if p.error is None else None for p in self.predict(images)]

    def classify(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Class probabilities, float (N, K), in the order of :attr:`class_names` (NaN rows for unreadable files)."""
        rows = [[p.probs[n] for n in self.class_names] if p.error is None else [np.nan] * len(self.class_names)
                for p in self.predict(images)]  # fmt: skip
        return np.array(rows, dtype=np.float32).reshape(-1, len(self.class_names))

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> list[Prediction]:
        """One :class:`Prediction` per image; a file that cannot be read gets one with ``error`` set, and the rest go on."""
        batch, slots = self.load_batch(images)
        masks, segs = None, None
        if self.segmenter is not None and len(batch):
            masks, flags = self.segmenter.masks(batch)  # on the device; the classifier reads them there
            segs = describe_batch(masks, flags)
        probs, empty = self.classifier.probabilities(batch, masks if self.classifier.needs_masks else None)
        out = []
        for slot in slots:
            if isinstance(slot, ImageReadError):
                out.append(Prediction("", {}, None, None, float("nan"), ["unreadable"], error=str(slot)))
                continue
            s = segs[slot] if segs else None
            flags = (list(s.flags) if s else []) + (["empty-mask-raw-used"] if bool(empty[slot]) else [])
            out.append(
                Prediction(
                    label=self.class_names[int(probs[slot].argmax())],
                    probs={n: float(probs[slot, c]) for c, n in enumerate(self.class_names)},
                    mask=s.mask if s else None,
                    box=s.bbox if s else None,
                    lung_fraction=s.lung_fraction if s else float("nan"),
                    flags=flags,
                )
            )
        return out

    def explain(self, images: ImageLike | Sequence[ImageLike], targets: list[int] | None = None) -> list[dict]:
        """Grad-CAM of the classifier for each image (predicted class, or ``targets``).

        Returns:
            Per image: ``cam`` float (S, S) in [0, 1] over the classifier input, ``input`` that input
            (float (S, S) in [0, 1]), ``lung`` the lung mask in the same geometry (or None), and
            ``in_lung_share``: the share of the map inside the lungs (NaN without a segmenter).
        """
        from .explain import gradcam, in_lung_share, input_lung_masks

        batch = self.images(images)
        segs = self.segmenter.segment(batch) if self.segmenter is not None else None
        masks = torch.from_numpy(np.stack([s.mask for s in segs]))[:, None] if segs else None
        clf = self.classifier
        cams = gradcam(clf, batch, masks if clf.needs_masks else None, targets)
        x01, _ = clf.task.inputs(batch.to(clf.device), masks.to(clf.device) if clf.needs_masks else None)
        lungs = input_lung_masks(clf, masks) if masks is not None else None
        shares = in_lung_share(cams, lungs) if lungs is not None else np.full(len(cams), np.nan)
        return [
            {"cam": cams[k], "input": x01[k, 0].float().cpu().numpy(), "lung": lungs[k] if lungs is not None else None,
             "in_lung_share": float(shares[k])}
            for k in range(len(cams))
        ]  # fmt: skip


def model_card(meta: dict, cls_config: dict) -> str:
    """A short Markdown model card: what it is, how it was trained, figures, intended use, limits."""
    data = cls_config.get("data", {})
    metrics = meta.get("metrics") or {}
    lines = [
        "# lungcls pipeline",
        "",
        "**Research use only. Not a diagnostic device**: not clinically validated; must not be used to diagnose,",
        "treat or triage patients.",
        "",
        f"- Stage 1: U-Net lung segmentation; stage 2: {cls_config['model']['arch']} on `{meta['mode']}` inputs "
        f"({cls_config['model']['image_size']} px), classes {', '.join(meta['class_names'])}.",
        f"- Working size {meta['working_size']} px; lungcls {meta['lungcls']}.",
        f"- Trained on: {', '.join(data.get('inputs', [])) or 'unknown'} (data manifest {data.get('manifest_digest', '?')[:12]}).",
        "",
        "## Metrics (last evaluation)",
        "",
    ]
    lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()] or [
        "- none recorded"
    ]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Machine-learning research on chest X-rays (e.g. comparing classifiers on raw vs lung-masked images).",
        "- Labels of public CXR sets are noisy and class is often confounded with the source hospital or scanner:",
        "  accuracy on such data can reflect shortcuts rather than disease. Check per-source results.",
        "- Not evaluated on paediatric images, lateral views, or devices and populations unlike the training data.",
    ]
    return "\n".join(lines) + "\n"

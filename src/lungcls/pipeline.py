"""``Pipeline``: stage 1 (lung U-Net) and stage 2 (crop-and-mask + ResNet) as one object.

    from lungcls import Pipeline
    pipe = Pipeline.load("bundle/")
    for r in pipe.predict(["a.png", "b.png"]):
        print(r.label, r.probs, r.lung_fraction, r.flags)

A bundle folder holds ``pipeline.json`` (working size, mode, class names, where each stage came
from, versions), ``segmenter/`` and ``classifier/`` (each ``config.json`` + ``model.safetensors`` +
``images.json``) and a generated ``MODEL_CARD.md``. Research use only: not a diagnostic device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import builtin
from .atomic import write_json, write_text
from .cls.classifier import Classifier
from .config import ClassifierConfig, SegmenterConfig, TrainConfig
from .errors import CheckpointError, ImageReadError, LungclsError
from .model_card import announce, pipeline_card, pipeline_warnings
from .output_policy import staged_folder
from .reader import check_side, read_images, resize_image
from .decisions import DecisionPolicy, decide, doubtful_lungs
from .gate import GateVerdict, InputGate
from .seg.infection import InfectionResult, measure
from .seg.segmenter import MaskBatch, Segmenter, describe
from .version import __version__

log = logging.getLogger(__name__)
ImageLike = str | Path | np.ndarray | torch.Tensor
BUNDLE_OUTPUTS = ("segmenter", "classifier", "raw-classifier", "pipeline.json", "MODEL_CARD.md")
SegmenterLike = Segmenter | str | Path


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        label: predicted class name; probs: {class name: probability} (calibrated, see
            :mod:`lungcls.cls.calibration`).
        mask: uint8 (S, S) lung mask in {0, 1} at the working size (None without a segmenter, or when not asked).
        box: lung bounding box (x0, y0, x1, y1) at the working size, x1/y1 exclusive, or None.
        lung_fraction: share of the image that is lung.
        flags: e.g. ``no-lung``, ``one-lung-field``, ``empty-mask-raw-used``, ``unreadable``.
        error: why the image could not be read (file and reason), else None.
        dice_estimate: the Dice the lung mask is expected to have (NaN without a segmenter).
        decision: ``answered``, ``flagged``, ``raw-fallback``, ``abstained``, ``refused`` or ``unreadable``; reason: why (see
            :mod:`lungcls.decisions`); ``label`` is empty when abstained or refused.
        confidence: the top calibrated probability of the classifier that answered.
        gate: the input gate's verdict (:class:`~lungcls.gate.GateVerdict`), when the pipeline has a gate.
        infection: the infection in each lung (:class:`~lungcls.seg.infection.InfectionResult`: mask at the working
            size, infected shares, score, grade, COVID-19 from infection), when the pipeline has an infection
            segmenter.
    """

    label: str
    probs: dict[str, float]
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None
    lung_fraction: float
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    infection: InfectionResult | None = None
    dice_estimate: float = float("nan")
    decision: str = "answered"
    reason: str = ""
    confidence: float = float("nan")
    gate: GateVerdict | None = None


class Pipeline:
    """Segment, crop-and-mask and classify CXRs in batches on the pipeline's device.

    Args:
        segmenter: a stage-1 :class:`Segmenter` (may be None for a ``raw`` classifier).
        classifier: a stage-2 :class:`Classifier`; its config fixes the mode and working size.
        infection: an infection :class:`Segmenter` (``target="infection"``): each :class:`Prediction` then
            carries the infection per lung (needs ``segmenter``).
        gate: the input gate (:class:`~lungcls.gate.InputGate`) run before both stages.
        raw: a raw-mode classifier that answers for doubtful lungs under the policy ``doubtful="raw"``.
        policy: what to do with refused, doubtful and unsure images (:class:`~lungcls.decisions.DecisionPolicy`).
    """

    def __init__(
        self,
        segmenter: Segmenter | None,
        classifier: Classifier,
        infection: Segmenter | None = None,
        gate: InputGate | None = None,
        raw: Classifier | None = None,
        policy: DecisionPolicy | None = None,
    ) -> None:
        if classifier.needs_masks and segmenter is None:
            raise LungclsError(f"a {classifier.cfg.mode!r} classifier needs a segmenter")
        if infection is not None and (segmenter is None or infection.cfg.target != "infection"):
            raise LungclsError("an infection segmenter needs a lung segmenter beside it, and must segment infection")
        self.policy = policy or DecisionPolicy()
        if raw is not None and (raw.cfg.mode != "raw" or raw.class_names != classifier.class_names):
            raise LungclsError("the fallback classifier must be a raw-mode classifier with the same classes")
        if self.policy.doubtful == "raw" and raw is None and classifier.needs_masks:
            raise LungclsError("the policy 'raw' for doubtful lungs needs a raw classifier to fall back to (--raw-model)")
        self.segmenter, self.classifier, self.infection, self.gate, self.raw = segmenter, classifier, infection, gate, raw
        self.size = classifier.cfg.working_size
        self.reports: dict[str, object] = {}  # evaluation reports, when the pipeline was just trained
        #: the models' card warnings and out-of-scope uses; logged once here, written into CSVs and bundles
        self.warnings = announce(pipeline_warnings(segmenter, classifier))

    @property
    def mode(self) -> str:
        """The classifier's input mode."""
        return self.classifier.cfg.mode

    @property
    def class_names(self) -> list[str]:
        """Class names, in the order of the probabilities."""
        return self.classifier.class_names

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        segmenter: SegmenterLike | None = None,
        infection: SegmenterLike | bool | None = None,
        gate: str | bool | None = "auto",
        raw: str | Path | Classifier | None = None,
        policy: DecisionPolicy | None = None,
    ) -> Pipeline:
        """Load a bundle (from :meth:`save`) or a ``train-cls`` run folder.

        Args:
            segmenter: use this stage-1 model instead of the bundle's, or of the one the classifier
                was trained with (a :class:`Segmenter`, a run folder, a bundle or a built-in name).
            infection: an infection segmenter to measure infection per lung with (``True``: the built-in one,
                :data:`lungcls.builtin.INFECTION`; or a :class:`Segmenter`, run folder or name).
            gate: the input gate: ``"auto"`` the one the lung segmenter carries (calibrated when it was trained; the
                built-in one has one), when it has one; ``True`` the same, an error without one; None/False: none.
            raw: a raw-mode classifier (run folder, bundle, or loaded) for the policy ``doubtful="raw"`` (default:
                the bundle's ``raw-classifier/``, if it has one).
            policy: see :class:`~lungcls.decisions.DecisionPolicy`.

        Raises:
            CheckpointError: ``path`` is neither (the message says what it found), or the classifier's
                segmenter cannot be found.
        """
        classifier = Classifier.load(path, device, batch_size=batch_size)
        finder = infection if isinstance(infection, Segmenter) or not infection else None
        if infection and finder is None:
            spec = None if infection is True else infection
            finder = Segmenter.load(spec, device, target="infection", batch_size=batch_size)
        if isinstance(segmenter, Segmenter):
            return cls(segmenter, classifier, finder)
        spec = segmenter if segmenter is not None else classifier.segmenter_spec()
        if spec is None and finder is not None:
            spec = builtin.DEFAULT  # the infection is measured in lungs: a raw classifier gets the built-in ones
        seg = Segmenter.load(spec, device, batch_size=batch_size, target="lungs") if spec is not None else None
        if raw is None and (Path(path) / "raw-classifier" / "config.json").is_file():
            raw = Path(path) / "raw-classifier"
        fallback = raw if isinstance(raw, Classifier) or raw is None else Classifier.load(raw, device, batch_size=batch_size)
        return cls(seg, classifier, finder, _gate(gate, seg), fallback, policy)

    def save(self, path: str | Path, metrics: dict | None = None, force: bool = False) -> Path:
        """Write a bundle folder from the models in memory: both stages' weights and configs (with their
        SHA-256, which loading checks), ``pipeline.json`` and ``MODEL_CARD.md``. Works for a pipeline that
        was never on disk.

        Args:
            metrics: extra figures to quote in the model card.
            force: replace the bundle in ``path`` (see :mod:`lungcls.output_policy`); else a folder that holds
                anything is refused.
        """
        with staged_folder(path, force, BUNDLE_OUTPUTS) as staging:
            self._write_bundle(staging, metrics)
        return Path(path)

    def _write_bundle(self, path: Path, metrics: dict | None) -> None:

        seg_source = None
        if self.segmenter is not None:
            sha = self.segmenter.save(path / "segmenter")
            source = self.segmenter.info.get("source", {})
            seg_source = {
                "origin": source.get("origin", "memory"),
                "name": source.get("name"),
                "sha256": sha,
                "source_sha256": source.get("sha256"),
            }
        linked = {"origin": "bundle", "path": "../segmenter"} if self.segmenter is not None else None
        cls_sha = self.classifier.save(path / "classifier", segmenter=linked)
        raw_sha = self.raw.save(path / "raw-classifier") if self.raw is not None else None
        meta = {
            "format": "lungcls-bundle/2",
            "lungcls": __version__,
            "mode": self.mode,
            "working_size": self.size,
            "class_names": self.class_names,
            "segmenter": seg_source,
            "classifier": {"sha256": cls_sha},
            "raw_classifier": {"sha256": raw_sha} if raw_sha else None,
            "postprocess": vars(self.segmenter.post) if self.segmenter else None,
            "warnings": self.warnings,
            "metrics": metrics or {},
        }
        write_json(path / "pipeline.json", meta)
        write_text(path / "MODEL_CARD.md", pipeline_card(self, meta))

    @classmethod
    def train(
        cls,
        data: Sequence[str | Path],
        out: str | Path,
        mode: str = "masked",
        seg_config: SegmenterConfig | None = None,
        seg_train: TrainConfig | None = None,
        cls_config: ClassifierConfig | None = None,
        cls_train: TrainConfig | None = None,
        progress: bool = True,
        overwrite: bool = False,
        strict: bool = False,
        resume: bool = False,
        tensorboard: bool = False,
        cache_dir: str | Path | None = None,
    ) -> Pipeline:
        """Train both stages on one split (stage 2 on stage 1's predicted masks) and save a bundle in ``out/bundle``.

        Writes ``out/cache`` (or ``cache_dir``: the packed data, split once for both stages when the data has
        no split), ``out/segmenter`` and ``out/classifier`` (run folders) and ``out/bundle``. The configs default to
        the ``auto`` recipes of :mod:`lungcls.recipes`. The returned pipeline holds the trained models
        and their evaluation reports (:attr:`reports`). ``resume`` goes on where an interrupted call stopped:
        a stage whose run is complete is loaded, an interrupted one resumed, a missing one trained.
        """
        from .cls.train import train_classifier
        from .recipes import classifier_recipe
        from .seg.train import train_segmenter

        out = Path(out)
        cls_model = replace(
            cls_config or classifier_recipe(device=cls_train.device if cls_train else None)[0], mode=mode
        )
        run = {"progress": progress, "overwrite": overwrite, "strict": strict, "tensorboard": tensorboard}
        run["cache_dir"] = cache = Path(cache_dir or out / "cache")

        def stage_1(again: bool):
            return train_segmenter(data, out / "segmenter", seg_config, seg_train, resume=again, **run)

        def stage_2(again: bool):
            masks = seg if mode != "raw" else None
            return train_classifier(
                [cache], out / "classifier", cls_model, cls_train, segmenter=masks, resume=again, **run
            )

        seg, seg_reports = _stage(Segmenter, out / "segmenter", resume, stage_1)
        classifier, cls_reports = _stage(Classifier, out / "classifier", resume, stage_2)
        pipe = cls(seg, classifier)  # a raw classifier keeps the trained segmenter all the same
        pipe.reports = {f"segmenter_{k}": v for k, v in seg_reports.items()}
        pipe.reports |= {f"classifier_{k}": v for k, v in cls_reports.items()}
        pipe.save(out / "bundle", force=resume or overwrite)
        return pipe

    # -- inference ----------------------------------------------------------------------------

    def images(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Any accepted input -> uint8 (N, 1, S, S) at the working size.

        Raises:
            ImageReadError: a path could not be read (the batch methods go on past it instead).
        """
        batch, slots = self.load_batch(images)
        for slot in slots:
            if isinstance(slot, ImageReadError):
                raise slot
        return batch

    def load_batch(self, images: ImageLike | Sequence[ImageLike]) -> tuple[torch.Tensor, list[int | ImageReadError]]:
        """Read a path, a uint8 array or tensor (H, W), (N, H, W) or (N, 1, H, W), or a list of these
        (float arrays in [0, 1] too), going on past unreadable files.

        Returns:
            (batch uint8 (M, 1, S, S) of the readable images, one slot per input image: its row in the
            batch, or the :class:`ImageReadError` that stopped it).
        """
        batch, slots, _, _ = self._read(images)
        return batch, slots

    def _read(self, images: ImageLike | Sequence[ImageLike]):
        """:meth:`load_batch`, and per readable image its share of coloured pixels and own (height, width), for the
        input gate (arrays: 0 and their shape)."""
        s = self.size
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape[1:] == (1, s, s):
            return images, list(range(len(images))), None, None  # a batch at the working size: used as it is
        items = images if isinstance(images, (list, tuple)) else [images]
        out: list[np.ndarray] = []
        slots: list[int | ImageReadError] = []
        colours: list[float] = []
        sizes: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, (str, Path)):
                read = read_images([item], (s, s))
                slots += [len(out) + x if isinstance(x, int) else x for x in read.slots]
                out += list(read.images)
                colours += read.colours or []
                sizes += read.sizes
                continue
            for x in _as_arrays(item):
                out.append(resize_image(x, (s, s)))
                slots.append(len(out) - 1)
                colours.append(0.0)
                sizes.append((int(x.shape[0]), int(x.shape[1])))
        batch = torch.from_numpy(np.stack(out))[:, None] if out else torch.empty(0, 1, s, s, dtype=torch.uint8)
        return batch, slots, colours, sizes

    def segment(self, images: ImageLike | Sequence[ImageLike]) -> list[np.ndarray | None]:
        """Lung masks, uint8 (S, S) in {0, 1}, one per image (None for a file that could not be read)."""
        if self.segmenter is None:
            raise LungclsError("this pipeline has no segmenter")
        batch, slots = self.load_batch(images)
        masks = self.segmenter.masks(batch).masks[:, 0].cpu().numpy() if len(batch) else []
        return [None if isinstance(slot, ImageReadError) else masks[slot] for slot in slots]

    def classify(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Class probabilities, float (N, K), in the order of :attr:`class_names` (NaN rows for unreadable files and
        for images the input gate refused)."""
        rows = [
            [p.probs[n] for n in self.class_names] if p.probs else [np.nan] * len(self.class_names)
            for p in self.predict(images)
        ]
        return np.array(rows, dtype=np.float32).reshape(-1, len(self.class_names))

    def predict(self, images: ImageLike | Sequence[ImageLike], masks: bool = True) -> list[Prediction]:
        """One :class:`Prediction` per image; a file that cannot be read gets one with ``error`` set, and the rest
        go on. ``masks=False``: no lung masks in the results (they stay on the device: faster on a GPU)."""
        batch, slots, colours, sizes = self._read(images)
        return self.predict_batch(batch, slots, masks=masks, colours=colours, sizes=sizes)

    def predict_batch(
        self,
        batch: torch.Tensor,
        slots: list[int | ImageReadError] | None = None,
        segmented: MaskBatch | None = None,
        masks: bool = True,
        colours: list[float] | None = None,
        sizes: list[tuple[int, int]] | None = None,
    ) -> list[Prediction]:
        """:meth:`predict` for a uint8 (N, 1, S, S) batch already at the working size (and slots from
        :meth:`load_batch`); ``segmented``: the batch's ``segmenter.masks`` when already computed; ``colours`` and
        ``sizes``: each image's share of coloured pixels and own size, for the input gate.

        The batch goes to the device once (from pinned memory on CUDA), and both stages read it there; the
        results come back as whole arrays, read once."""
        slots = list(range(len(batch))) if slots is None else slots
        device = self.classifier.device
        if device.type == "cuda" and batch.device.type == "cpu" and len(batch):
            batch = batch.pin_memory().to(device, non_blocking=True)
        gating = self.gate is not None and self.policy.gate and len(batch) > 0
        shared = gating and self.gate.segmenter is self.segmenter
        lungs, segs, verdicts = None, None, None
        if self.segmenter is not None and len(batch):
            if segmented is None or (shared and segmented.probs is None):
                segmented = self.segmenter.masks(batch, keep_probs=shared)  # on the device, read there by both stages
            lungs, segs = segmented.masks, describe(segmented, with_masks=masks)
        if gating:
            verdicts = self.gate.check(batch, colours, sizes, segmented if shared else None)
        infected = self._infection(batch, lungs, segmented, masks)
        probs, empty = (a.numpy() for a in self.classifier.probabilities(batch, lungs))
        fallback = self.raw is not None and self.policy.doubtful == "raw" and self.classifier.needs_masks
        raw = self.raw.probabilities(batch, None)[0].numpy() if fallback and len(batch) else None
        out = []
        for slot in slots:
            if isinstance(slot, ImageReadError):
                out.append(Prediction("", {}, None, None, float("nan"), ["unreadable"], error=str(slot), decision="unreadable",
                                      reason=slot.reason))  # fmt: skip
                continue
            s = segs[slot] if segs else None
            flags = (list(s.flags) if s else []) + (["empty-mask-raw-used"] if empty[slot] else [])
            pred = Prediction(
                label="", probs={}, mask=s.mask if s else None, box=s.box if s else None,
                lung_fraction=s.lung_fraction if s else float("nan"), flags=flags,
                infection=infected[slot] if infected else None, dice_estimate=s.dice_estimate if s else float("nan"),
                gate=verdicts[slot] if verdicts else None,
            )  # fmt: skip
            out.append(self._decided(pred, probs[slot], raw[slot] if raw is not None else None))
        return out

    def _decided(self, pred: Prediction, probs: np.ndarray, raw: np.ndarray | None) -> Prediction:
        """``pred`` with its class, probabilities, decision and reason under the pipeline's policy."""
        refused = pred.gate.why() if pred.gate is not None and not pred.gate.accepted else None
        doubtful = doubtful_lungs(pred.flags, pred.dice_estimate, self.policy.min_dice_estimate)
        masked = self.classifier.needs_masks
        if masked and doubtful and self.policy.doubtful == "raw" and raw is not None:
            probs = raw
        pred.decision, pred.reason = decide(self.policy, float(probs.max()), refused, doubtful, masked)
        pred.confidence = float(probs.max())
        if pred.decision != "refused":
            pred.probs = dict(zip(self.class_names, probs.tolist()))
        if pred.decision not in ("refused", "abstained"):
            pred.label = self.class_names[int(probs.argmax())]
        return pred

    def _infection(self, batch: torch.Tensor, lungs, segmented: MaskBatch | None, masks: bool) -> list:
        """The infection per lung of each image of ``batch`` (empty without an infection segmenter)."""
        if self.infection is None or lungs is None:
            return []
        from .outputs import detector_threshold

        found = self.infection.masks(batch).masks.to(lungs.device)
        return measure(found, lungs, segmented.flags, detector_threshold(self.infection), with_masks=masks)

    def explain(
        self, images: ImageLike | Sequence[ImageLike], targets: list[int] | None = None, method: str = "gradcam"
    ) -> list[dict]:
        """Class-activation maps of the classifier (pytorch-grad-cam) for each image.

        Args:
            targets: the class index to explain per image (default: the predicted class).
            method: ``gradcam``, ``gradcam++``, ``hirescam``, ``xgradcam``, ``layercam``, ``eigencam`` ...
                (see :data:`lungcls.explain.CAM_METHODS`).

        Returns:
            Per image: ``cam`` float (S, S) in [0, 1] over the classifier input, ``input`` that input
            (float (S, S) in [0, 1]), ``lung`` the lung mask in the same geometry (or None),
            ``in_lung_share``: the share of the map inside the lungs (NaN without a segmenter), and
            ``box``: the crop box (x0, y0, x1, y1) at the working size that the input shows.
        """
        from .explain import explain

        batch = self.images(images)
        masks = self.segmenter.masks(batch).masks if self.segmenter is not None else None
        return explain(self.classifier, batch, masks, targets, method)


def _gate(spec: str | bool | None, segmenter: Segmenter | None) -> InputGate | None:
    """The input gate :meth:`Pipeline.load` was asked for (see there)."""
    if not spec or segmenter is None:
        return None
    if spec == "auto" and not segmenter.info.get("gate"):
        log.info("no input gate: the lung segmenter carries no calibrated gate")
        return None
    return InputGate.for_segmenter(segmenter)


def _as_arrays(item: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """A uint8 (or [0, 1] float) array or tensor (H, W), (N, H, W) or (N, 1, H, W) -> uint8 (H, W) images."""
    a = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"float images must be in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
        a = np.round(a * 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        raise ValueError(f"got a colour array of shape {a.shape}; pass grayscale (H, W) images, or file paths")
    if a.ndim == 4 and a.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W), got shape {a.shape}")
    if a.ndim not in (2, 3, 4):
        raise ValueError(f"expected an image (H, W) or a batch (N, H, W) / (N, 1, H, W), got shape {a.shape}")
    if problem := check_side(a.shape[-2], a.shape[-1]):
        raise ValueError(f"array of shape {a.shape}: {problem}")
    return [np.ascontiguousarray(x) for x in a.reshape((-1,) + a.shape[-2:])]


def _stage(model_class, folder: Path, resume: bool, train) -> tuple:
    """(model, reports) of one stage of :meth:`Pipeline.train`: trained by ``train(resume)``, or, when resuming,
    loaded from its complete run or resumed from its interrupted one."""
    from .runs import run_state

    state = run_state(folder) if resume else "empty"
    if state == "complete":
        log.info("%s: complete in %s (not trained again)", model_class.kind, folder)
        return model_class.load(folder), {}
    run = train(state == "interrupted")
    return run.model, run.reports


__all__ = ["CheckpointError", "Pipeline", "Prediction"]

"""The models ``lungcls serve`` answers with, and the one function that turns uploaded files into results.

Results share their field names with the CSV columns of ``lungcls predict`` / ``segment``
(:func:`lungcls.outputs.prediction_row`, :func:`lungcls.outputs.common_row`, ``infection_*``), plus:

=============== ===============================================================================================
gate_accepted   whether the input gate took the picture for a frontal CXR (absent without a gate)
gate_reasons    the gate's reasons (keys of :data:`lungcls.gate.REASONS`), a list
raw             in a bundle with a raw classifier beside a masked one: that classifier's ``predicted``,
                ``decision``, ``confidence`` and ``p_<class>`` for the same image
pictures        when asked: PNG data URLs ``overlay`` (lungs outlined in green, infection in red, at the image's
                own size up to 1024 px), ``crop`` (the lung crop the classifier sees, masked in masked modes) and
                ``explanation`` (the class-activation map)
=============== ===============================================================================================
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import builtin
from ..defaults import WORKING_SIZE
from ..errors import ImageReadError
from ..gate import InputGate
from ..model_card import model_warnings
from ..outputs import box_at, common_row, detector_threshold, mask_at, overlay, png, prediction_row
from ..pipeline import Pipeline, Prediction
from ..reader import InMemoryFile, read_images
from ..seg.infection import measure
from ..seg.segmenter import Segmenter, describe


@dataclass
class ServedModels:
    """What the server answers with.

    Attributes:
        segmenter: the lung segmenter; infection: the infection segmenter (or None); gate: the input gate (or None).
        pipeline: the bundle's pipeline (None when the server runs on the built-in segmenters only: ``/v1/predict``
            then answers 409); raw: the same pipeline with the bundle's raw classifier, for the raw / masked switch.
        source: what was loaded, in words.
    """

    segmenter: Segmenter
    infection: Segmenter | None
    gate: InputGate | None
    pipeline: Pipeline | None
    raw: Pipeline | None
    source: str

    @classmethod
    def load(cls, bundle: str | Path | None = None, device: str = "auto", infection: bool = True) -> ServedModels:
        """The models of ``bundle`` (a bundle or ``train-cls`` run folder), or the built-in segmenters when None."""
        finder = infection and builtin.INFECTION in builtin.names()
        if bundle is None:
            seg = Segmenter.load(builtin.DEFAULT, device=device, target="lungs")
            inf = Segmenter.load(builtin.INFECTION, device=device, target="infection") if finder else None
            gate = InputGate.for_segmenter(seg) if seg.info.get("gate") else None
            return cls(seg, inf, gate, None, None, f"built-in {builtin.DEFAULT} (no classifier)")
        pipe = Pipeline.load(bundle, device=device, infection=True if finder else None)
        seg = pipe.segmenter or Segmenter.load(builtin.DEFAULT, device=device, target="lungs")
        raw = None
        if pipe.raw is not None and pipe.classifier.needs_masks:
            raw = Pipeline(pipe.segmenter, pipe.raw, pipe.infection, pipe.gate, policy=pipe.policy)
        return cls(seg, pipe.infection, pipe.gate, pipe, raw, f"bundle {bundle} ({pipe.mode})")

    def describe(self) -> dict:
        """``GET /v1/models``: what answers, with its class names, mode and source."""
        info = {"source": self.source, "segmenter": _name(self.segmenter), "gate": self.gate is not None,
                "infection": _name(self.infection) if self.infection else None,
                "classifier": None, "class_names": [], "modes": []}  # fmt: skip
        if self.pipeline is not None:
            info |= {"classifier": self.pipeline.classifier.cfg.arch, "class_names": self.pipeline.class_names,
                     "modes": [self.pipeline.mode] + (["raw"] if self.raw is not None else []),
                     "warnings": self.pipeline.warnings}  # fmt: skip
        return info

    def run(self, kind: str, files: list[InMemoryFile], pictures: bool, explain: bool) -> list[dict]:
        """The results of ``kind`` (``segment`` or ``predict``) for uploaded files, one per file (an unreadable file
        gets ``error``): every file read once, segmented once, as one batch on the device."""
        size = self.pipeline.size if self.pipeline is not None else WORKING_SIZE
        read = read_images(files, (size, size), keep_native=pictures)
        batch = torch.from_numpy(read.images)[:, None]
        rows: list[dict] = [{} for _ in read.images]
        if len(batch):
            if kind == "predict" and self.pipeline is not None:
                rows = self._predict(batch, read, pictures, explain)
            else:
                rows = self._segment(batch, read, pictures)
        out = []
        for f, slot in zip(files, read.slots):
            if isinstance(slot, ImageReadError):
                out.append({"name": f.name, "error": slot.reason})
            else:
                out.append(rows[slot] | {"name": f.name, "path": f.name})
        return out

    def _segment(self, batch: torch.Tensor, read, pictures: bool) -> list[dict]:
        size = batch.shape[-1]
        lungs = self.segmenter.masks(batch, keep_probs=self.gate is not None)
        verdicts = self.gate.check(batch, read.colours, read.sizes, lungs) if self.gate is not None else None
        infected = []
        if self.infection is not None:
            found = self.infection.masks(batch.to(self.infection.device)).masks.to(lungs.masks.device)
            infected = measure(found, lungs.masks, lungs.flags, detector_threshold(self.infection))
        rows = []
        for k, r in enumerate(describe(lungs)):
            row = common_row("", "", read.sizes[k], r.lung_fraction, r.box, r.flags, size, r.dice_estimate)
            row |= _gate_fields(verdicts[k] if verdicts else None) | {"model_warnings": self._warnings()}
            row |= infected[k].row() if infected else {}
            if pictures:
                inf = infected[k].mask if infected else None
                row["pictures"] = _pictures(read.natives[k], r.mask, inf, r.box, size, None)
            rows.append(row)
        return rows

    def _warnings(self) -> str:
        """The segmenters' card warnings, as ``segment.csv`` writes them."""
        found = model_warnings(self.segmenter) + (model_warnings(self.infection) if self.infection else [])
        return "; ".join(found)

    def _predict(self, batch: torch.Tensor, read, pictures: bool, explain: bool) -> list[dict]:
        pipe = self.pipeline
        preds = pipe.predict_batch(batch, colours=read.colours, sizes=read.sizes)
        raws = self.raw.predict_batch(batch, colours=read.colours, sizes=read.sizes) if self.raw is not None else None
        maps = _explanations(pipe, batch, preds) if explain else [None] * len(preds)
        rows = []
        for k, p in enumerate(preds):
            share = maps[k]["in_lung_share"] if maps[k] is not None else math.nan
            row = prediction_row(pipe, "", "", read.sizes[k], p, share) | _gate_fields(p.gate)
            row |= p.infection.row() if p.infection is not None else {}
            if raws is not None:
                r = raws[k]
                row["raw"] = {"predicted": r.label, "decision": r.decision, "confidence": round(r.confidence, 5),
                              **{f"p_{n}": round(v, 5) for n, v in r.probs.items()}}  # fmt: skip
            if pictures:
                inf = p.infection.mask if p.infection is not None else None
                masked = pipe.classifier.needs_masks and p.decision != "raw-fallback"
                row["pictures"] = _pictures(read.natives[k], p.mask, inf, p.box, pipe.size, maps[k], p, masked)
            rows.append(row)
        return rows


def _name(seg: Segmenter) -> str:
    return str(seg.info.get("source", {}).get("name", "?"))


def _gate_fields(verdict) -> dict:
    if verdict is None:
        return {}
    return {"gate_accepted": verdict.accepted, "gate_score": round(verdict.score, 4), "gate_reasons": verdict.reasons}


def _explanations(pipe: Pipeline, batch: torch.Tensor, preds: list[Prediction]) -> list[dict | None]:
    """The class-activation map of each answered image (None for refused and abstained ones)."""
    from ..explain import explain

    rows = [k for k, p in enumerate(preds) if p.label]
    out: list[dict | None] = [None] * len(preds)
    if rows:
        lungs = pipe.segmenter.masks(batch[rows]).masks if pipe.segmenter is not None else None
        targets = [pipe.class_names.index(preds[k].label) for k in rows]
        for k, r in zip(rows, explain(pipe.classifier, batch[rows], lungs, targets)):
            out[k] = r
    return out


def _pictures(
    native, mask, infection, box, size: int, cam: dict | None, pred: Prediction | None = None, masked: bool = False
) -> dict:
    """PNG data URLs of the overlay, the lung crop and (when explained) the class-activation map."""
    from ..explain import explanation_picture

    lungs = mask_at(mask, native.shape) if mask is not None else np.zeros_like(native)
    found = mask_at(infection, native.shape) if infection is not None else None
    out = {"overlay": _url(overlay(native, lungs, infection=found))}
    if box is not None:
        x0, y0, x1, y1 = box_at(box, size, native.shape)
        out["crop"] = _url(native[y0:y1, x0:x1] * (lungs[y0:y1, x0:x1] if masked else 1))
    if cam is not None and pred is not None:
        caption = f"{pred.label} {pred.probs[pred.label]:.2f}"
        out["explanation"] = _url(explanation_picture(native, cam, size, mask, caption, min_side=256, max_side=768))
    return out


def _url(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(picture)).decode("ascii")

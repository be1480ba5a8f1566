"""``lungcls data inspect``: what is in a dataset, and what is wrong with it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .duplicates import NEAR_THRESHOLD, THUMB, duplicate_groups
from .manifest import Discovery
from .scan import scan


@dataclass
class InspectReport:
    """Counts, problems and statistics of a dataset (JSON-ready via :meth:`to_dict`)."""

    total: int
    counts: dict[str, dict[str, int]]
    counts_by_source: dict[str, dict[str, int]]
    class_names: list[str] = field(default_factory=list)
    label_mapping: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    masks: dict[str, int] = field(default_factory=dict)
    mask_problems: list[dict[str, str]] = field(default_factory=list)
    orphan_masks: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, dict[str, float]] = field(default_factory=dict)
    common_sizes: dict[str, int] = field(default_factory=dict)
    duplicates_within_split: list[dict] = field(default_factory=list)
    duplicates_across_splits: list[dict] = field(default_factory=list)
    duplicates_across_sources: int = 0
    duplicates_between_sources: dict[str, int] = field(default_factory=dict)
    duplicates_exact: int = 0
    duplicates_near: int = 0
    patients: int = 0
    patients_across_splits: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The report as plain JSON-ready data."""
        return asdict(self)

    @property
    def ok(self) -> bool:
        """True when every image could be read."""
        return not self.unreadable


def inspect_dataset(
    found: Discovery, workers: int | None = None, progress: bool = True, near_threshold: float = NEAR_THRESHOLD
) -> tuple[InspectReport, list[list[int]]]:
    """Decode every image and mask once and report on the dataset.

    Returns:
        (report, duplicates): ``duplicates`` holds groups of sample indices showing the same
        picture, ready for :func:`lungcls.data.split.make_split`.
    """
    m = found.manifest
    results = list(scan(m.samples, keep_pixels=False, workers=workers, progress=progress, desc="inspecting"))
    by_source: dict[str, Counter] = defaultdict(Counter)
    for s in m:
        by_source[s.source][s.label] += 1
    names = m.class_names
    report = InspectReport(
        total=len(m),
        counts=m.counts(),
        counts_by_source={src: {n: c.get(n, 0) for n in names} for src, c in by_source.items()},
        class_names=names,
        label_mapping=m.label_mapping(),
        notes=list(found.notes),
        orphan_masks=found.orphan_masks,
        ignored_files=found.ignored_files,
    )
    mask_status: Counter = Counter()
    ok = [r for r in results if r.error is None]
    for s, r in zip(m.samples, results):
        if r.error is not None:
            report.unreadable.append({"path": s.image, "reason": r.error})
            continue
        mask_status[r.mask_status] += 1
        if r.mask_status not in ("ok", "none"):
            report.mask_problems.append(
                {"image": s.image, "mask": s.mask or "", "problem": r.mask_status, "reason": r.mask_error or ""}
            )
    report.masks = dict(mask_status)
    report.formats = dict(Counter(r.format for r in ok))
    report.modes = dict(Counter(r.mode for r in ok))
    if ok:
        hw = np.array([r.native_size for r in ok])
        report.sizes = {
            axis: {"min": int(hw[:, k].min()), "median": float(np.median(hw[:, k])), "max": int(hw[:, k].max())}
            for k, axis in enumerate(("height", "width"))
        }
        report.common_sizes = dict(Counter(f"{w}x{h}" for h, w in (r.native_size for r in ok)).most_common(5))
    hashes = [r.content_hash for r in results]
    thumbs = np.stack([r.thumb if r.thumb is not None else np.zeros((THUMB, THUMB), np.uint8) for r in results])
    groups = duplicate_groups(hashes, thumbs, near_threshold) if results else []
    _duplicates(report, m.samples, hashes, groups)
    _patients(report, m.samples)
    return report, groups


def _duplicates(report: InspectReport, samples, hashes: list[str], groups: list[list[int]]) -> None:
    for idx in groups:
        kind = "exact" if len({hashes[i] for i in idx}) == 1 else "near"
        entry = {"kind": kind, "paths": [samples[i].image for i in idx]}
        if len({samples[i].split for i in idx}) > 1:
            report.duplicates_across_splits.append(entry)
        else:
            report.duplicates_within_split.append(entry)
        sources = sorted({samples[i].source for i in idx})
        report.duplicates_across_sources += len(sources) > 1
        for a in range(len(sources)):
            for b in range(a + 1, len(sources)):
                key = f"{sources[a]} & {sources[b]}"
                report.duplicates_between_sources[key] = report.duplicates_between_sources.get(key, 0) + 1
        report.duplicates_exact += kind == "exact"
        report.duplicates_near += kind == "near"


def _patients(report: InspectReport, samples) -> None:
    splits: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.patient:
            splits[s.patient].add(s.split)
    report.patients = len(splits)
    report.patients_across_splits = sorted(p for p, sp in splits.items() if len(sp) > 1)


def format_report(report: InspectReport, max_list: int = 10) -> str:
    """A human-readable text version of the report."""
    names = report.class_names
    lines = [f"{report.total} images, classes: {', '.join(names)}"]
    lines += [f"note: {n}" for n in report.notes]
    width = max([6, *(len(s) for s in report.counts), *(len(s) for s in report.counts_by_source)]) + 2
    cols = [max(11, len(n) + 2) for n in names]

    def table_row(first: str, c: dict) -> str:
        return (
            f"  {first:<{width}}"
            + "".join(f"{c.get(n, 0):>{w}}" for n, w in zip(names, cols))
            + f"{sum(c.values()):>9}"
        )

    header = "".join(f"{n:>{w}}" for n, w in zip(names, cols)) + f"{'total':>9}"
    lines += ["", "Counts per split and class:", f"  {'split':<{width}}" + header]
    lines += [table_row(split, c) for split, c in report.counts.items()]
    if len(report.counts_by_source) > 1:
        lines += ["", "Counts per source:", f"  {'source':<{width}}" + header]
        lines += [table_row(src, c) for src, c in report.counts_by_source.items()]
    if report.label_mapping:
        lines += ["", "Labels as written in the data -> class used:"]
        for written, used in report.label_mapping.items():
            lines.append(f"  {written!r:<28} -> " + ", ".join(f"{k} ({v} images)" for k, v in used.items()))
    lines += ["", f"Unreadable images: {len(report.unreadable)}"]
    lines += [f"  {u['path']}: {u['reason']}" for u in report.unreadable[:max_list]]
    lines += ["", "Lung masks: " + (", ".join(f"{k} {v}" for k, v in sorted(report.masks.items())) or "none")]
    lines += [
        f"  {p['problem']}: {p['mask'] or p['image']} {p['reason']}".rstrip() for p in report.mask_problems[:max_list]
    ]
    if report.orphan_masks:
        lines.append(f"  masks without an image: {len(report.orphan_masks)}")
        lines += [f"    {p}" for p in report.orphan_masks[:max_list]]
    if report.ignored_files:
        lines.append(f"  non-image files ignored: {len(report.ignored_files)}")
    if report.sizes:
        h, w = report.sizes["height"], report.sizes["width"]
        lines += [
            "",
            f"Native size: height {h['min']}-{h['max']} (median {h['median']:.0f}), "
            f"width {w['min']}-{w['max']} (median {w['median']:.0f})",
        ]
        lines.append("  most common: " + ", ".join(f"{k} ({v})" for k, v in report.common_sizes.items()))
        lines.append("  formats: " + ", ".join(f"{k} {v}" for k, v in report.formats.items()))
        lines.append("  modes: " + ", ".join(f"{k} {v}" for k, v in report.modes.items()))
    return "\n".join(lines + _duplicate_and_patient_lines(report, max_list))


def _duplicate_and_patient_lines(report: InspectReport, max_list: int) -> list[str]:
    n_within = sum(len(g["paths"]) for g in report.duplicates_within_split)
    n_across = sum(len(g["paths"]) for g in report.duplicates_across_splits)
    lines = [
        "",
        f"Duplicate images: {report.duplicates_exact} groups with the same pixels, {report.duplicates_near} "
        "more of the same picture resampled or re-encoded (near duplicates)",
        f"  {len(report.duplicates_within_split)} groups ({n_within} files) within a split, "
        f"{len(report.duplicates_across_splits)} groups ({n_across} files) ACROSS splits; "
        f"{report.duplicates_across_sources} groups span two sources",
    ]
    for pair, n in sorted(report.duplicates_between_sources.items()):
        lines.append(f"  shared by {pair}: {n} pictures")
    for g in (report.duplicates_across_splits + report.duplicates_within_split)[:max_list]:
        lines.append(f"  [{g['kind']}] " + "  ==  ".join(g["paths"]))
    if report.patients:
        lines += ["", f"Patients: {report.patients} ids; in more than one split: {len(report.patients_across_splits)}"]
        if report.patients_across_splits:
            lines.append("  " + ", ".join(report.patients_across_splits[:max_list]))
    else:
        lines += ["", "Patients: no patient ids (splits cannot be checked for patient overlap)"]
    return lines

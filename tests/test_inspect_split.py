"""``data inspect`` on the real sets, and patient-grouped, stratified, seeded splits."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from lungcls.data import make_split, open_dataset
from lungcls.data.inspect import format_report, inspect_dataset
from lungcls.data.manifest import Manifest, Sample

SETS = ["covid19-radiography", "ieee8023-originals", "ieee8023-radiologist100", "ieee8023-v7labs427", "nih-cxr8"]


@pytest.fixture(scope="module")
def all_sets(shared_data):
    found = open_dataset([shared_data / s for s in SETS])
    report, duplicates = inspect_dataset(found, workers=2, progress=False)
    return found, report, duplicates


def test_inspect_reports_the_true_counts_of_every_set(all_sets, shared_data):
    found, report, _ = all_sets
    for name in SETS:
        with open(shared_data / name / "labels.csv", newline="") as f:
            truth = Counter(row["class"] for row in csv.DictReader(f))
        got = {k: v for k, v in report.counts_by_source[name].items() if v}
        assert got == dict(truth), name
    assert report.total == len(found.manifest) == sum(sum(c.values()) for c in report.counts_by_source.values())
    assert report.ok and report.masks["ok"] == 100 + 427 + 13


def test_inspect_finds_the_images_shared_by_the_two_ieee8023_sets(all_sets):
    _, report, _ = all_sets
    # the shared sets' README: 64 COVID images are in both, the same picture; a few were
    # resampled differently, so they are matched as near duplicates rather than exact ones
    shared = report.duplicates_between_sources["ieee8023-radiologist100 & ieee8023-v7labs427"]
    assert 58 <= shared <= 64
    assert report.duplicates_between_sources["ieee8023-originals & ieee8023-radiologist100"] == 13
    text = format_report(report)
    assert "shared by ieee8023-radiologist100 & ieee8023-v7labs427" in text
    assert report.patients > 500 and not report.patients_across_splits


def test_split_keeps_patients_and_duplicates_on_one_side_and_is_stratified(all_sets):
    found, _, duplicates = all_sets
    split = make_split(found.manifest, val=0.1, test=0.2, seed=3, duplicates=duplicates)
    assert split.splits and set(split.splits) == {"Train", "Val", "Test"}
    sides: dict[str, set] = {}
    for s in split:
        if s.patient:
            sides.setdefault(s.patient, set()).add(s.split)
    assert all(len(v) == 1 for v in sides.values())
    for group in duplicates:
        assert len({split.samples[i].split for i in group}) == 1
    counts = split.counts()
    for cls in ("COVID-19", "Non-COVID", "Normal"):
        total = sum(c[cls] for c in counts.values())
        assert abs(counts["Test"][cls] / total - 0.2) < 0.03, cls
        assert abs(counts["Val"][cls] / total - 0.1) < 0.03, cls
    again = make_split(found.manifest, val=0.1, test=0.2, seed=3, duplicates=duplicates)
    other = make_split(found.manifest, val=0.1, test=0.2, seed=4, duplicates=duplicates)
    assert [s.split for s in again] == [s.split for s in split] != [s.split for s in other]


def test_inspect_flags_patients_and_images_in_two_splits(tmp_path, radiologist100):
    images = sorted((radiologist100 / "Lung Segmentation Data" / "All" / "COVID-19" / "images").iterdir())[:3]
    samples = [
        Sample(str(images[0]), 0, split="Train", patient="7"),
        Sample(str(images[1]), 0, split="Test", patient="7"),
        Sample(str(images[2]), 0, split="Train", patient="8"),
        Sample(str(images[2]), 0, split="Test", patient="9"),
    ]
    from lungcls.data.manifest import Discovery

    report, _ = inspect_dataset(Discovery(Manifest(samples)), workers=0, progress=False)
    assert report.patients_across_splits == ["7"]
    assert len(report.duplicates_across_splits) == 1 and report.duplicates_across_splits[0]["kind"] == "exact"

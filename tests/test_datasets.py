"""Finding datasets: COVID-QU-Ex as it unpacks (from any level), CSV manifests, sidecar patient ids."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from pathlib import Path

import pytest

from lungcls import DataError
from lungcls.data import CLASS_NAMES, discover, open_dataset, read_manifest_csv

from .conftest import real_pairs

CLASS_PREFIX = {"COVID-19": "covid_", "Non-COVID": "non_COVID (", "Normal": "Normal ("}


def covidqu_tree(root: Path, pairs: list[tuple[Path, Path]]) -> Path:
    """A COVID-QU-Ex-shaped tree from real images: doubled part folders, names with spaces and parentheses."""
    top = root / "COVID-QU-Ex Dataset"
    k = 0
    for part in ("Lung Segmentation Data", "Infection Segmentation Data"):
        for split in ("Train", "Val", "Test"):
            for cls in CLASS_NAMES:
                base = top / part / part / split / cls
                for sub in ("images", "lung masks") + (("infection masks",) if part.startswith("Inf") else ()):
                    (base / sub).mkdir(parents=True)
                n = 2 if part.startswith("Lung") else 1
                for image, mask in pairs[k % len(pairs) : k % len(pairs) + n]:
                    k += 1
                    prefix = CLASS_PREFIX[cls]
                    name = f"{prefix}{k}).png" if prefix.endswith("(") else f"{prefix}{k}.png"
                    shutil.copy(image, base / "images" / name)
                    shutil.copy(mask, base / "lung masks" / name)
    return top


@pytest.fixture
def tree(tmp_path, radiologist100) -> Path:
    return covidqu_tree(tmp_path, real_pairs(radiologist100, 30))


def test_discovers_covidqu_from_every_kind_of_root(tree):
    lung = tree / "Lung Segmentation Data"
    roots = {
        "top folder": (tree, 18),
        "part folder": (lung, 18),
        "inner part folder": (lung / "Lung Segmentation Data", 18),
        "other part": (tree / "Infection Segmentation Data", 9),
        "split folder": (lung / "Lung Segmentation Data" / "Val", 6),
    }
    for kind, (root, expected) in roots.items():
        m = discover(root).manifest
        assert len(m) == expected, kind
        assert all(s.mask and Path(s.mask).name == Path(s.image).name for s in m), kind
    top = discover(tree).manifest
    assert top.splits == ["Test", "Train", "Val"]
    assert top.counts()["Train"] == {"COVID-19": 2, "Non-COVID": 2, "Normal": 2}
    names = {Path(s.image).name for s in top}
    assert "Normal (17).png" in names and any(n.startswith("non_COVID (") for n in names)
    assert discover(lung / "Lung Segmentation Data" / "Val").manifest.splits == ["Val"]


def test_part_can_be_chosen_and_a_wrong_part_is_named(tree):
    assert len(discover(tree, part="Infection Segmentation Data").manifest) == 9
    with pytest.raises(DataError, match="no part named 'Lungs'"):
        discover(tree, part="Lungs")


def test_unpaired_masks_and_missing_masks_are_reported(tree):
    val = tree / "Lung Segmentation Data" / "Lung Segmentation Data" / "Val" / "Normal"
    first, second = sorted((val / "images").iterdir())
    (val / "lung masks" / first.name).unlink()  # image without mask
    second.unlink()  # mask without image
    (val / "images" / "notes.txt").write_text("not an image")
    found = discover(tree)
    sample = next(s for s in found.manifest if Path(s.image).name == first.name)
    assert sample.mask is None
    assert found.orphan_masks == [str(val / "lung masks" / second.name)]
    assert found.ignored_files == [str(val / "images" / "notes.txt")]


def test_shared_sets_get_patient_ids_from_their_labels_csv(shared_data):
    m = discover(shared_data / "ieee8023-radiologist100").manifest
    assert len(m) == 100 and all(s.patient for s in m) and m.splits == ["All"]
    assert {s.source for s in m} == {"ieee8023-radiologist100"}
    nih = discover(shared_data / "nih-cxr8").manifest
    assert all(s.patient for s in nih) and all(s.mask is None for s in nih)


def test_flat_set_with_labels_csv_reads_as_a_manifest(shared_data):
    m = discover(shared_data / "ieee8023-originals").manifest
    assert len(m) == 13
    assert all(Path(s.image).is_file() and s.mask and Path(s.mask).is_file() for s in m)


def test_csv_manifest_with_relative_paths_and_splits(tmp_path, radiologist100):
    pairs = real_pairs(radiologist100, 3)
    for image, mask in pairs:
        shutil.copy(image, tmp_path / image.name)
        shutil.copy(mask, tmp_path / f"mask_{image.name}")
    rows = ["image,label,mask,split,patient_id"]
    rows += [
        f"{p.name},{c},mask_{p.name},{sp},p{k}"
        for k, ((p, _), c, sp) in enumerate(zip(pairs, ["covid", "Normal", "pneumonia"], ["Train", "Train", "Test"]))
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    m = read_manifest_csv(tmp_path / "m.csv")
    assert [s.label for s in m] == ["COVID-19", "Normal", "Non-COVID"]
    assert m.label_mapping() == {"covid": {"COVID-19": 1}, "pneumonia": {"Non-COVID": 1}}
    assert m.splits == ["Train", "Test"] and [s.patient for s in m] == ["p0", "p1", "p2"]
    assert open_dataset([tmp_path / "m.csv"]).manifest.samples == m.samples


def test_bad_manifests_name_the_file_line_and_problem(tmp_path):
    (tmp_path / "bad.csv").write_text("image,label\nx.png,covid\n")
    with pytest.raises(DataError, match=r"bad.csv, line 2: image 'x.png' not found"):
        read_manifest_csv(tmp_path / "bad.csv")
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "label.csv").write_text("image,label\nx.png,\n")
    with pytest.raises(DataError, match=r"label.csv, line 2: empty class label"):
        read_manifest_csv(tmp_path / "label.csv")
    (tmp_path / "cols.csv").write_text("file_name,diagnosis\n")
    with pytest.raises(DataError, match="needs an image column"):
        read_manifest_csv(tmp_path / "cols.csv")
    with pytest.raises(DataError, match="no dataset found"):
        discover(tmp_path / ".." / tmp_path.name)


def test_a_folder_of_data_sets_yields_every_set_as_its_own_source(shared_data):
    import csv
    from collections import Counter

    found = discover(shared_data)
    m = found.manifest
    sets = sorted(p.name for p in shared_data.iterdir() if (p / "labels.csv").is_file())
    assert sorted({s.source for s in m}) == sets
    for name in sets:
        with open(shared_data / name / "labels.csv", newline="") as f:
            truth = Counter(row["class"] for row in csv.DictReader(f))
        assert Counter(s.label for s in m if s.source == name) == truth, name
    assert sum(1 for s in m if s.mask) >= 100 + 427 + 13 + 4384
    assert any(s.patient for s in m if s.source == "nih-cxr8")
    assert found.notes and f"a folder of {len(sets)} data sets" in found.notes[0]


def test_any_class_set_is_taken_from_the_data_and_the_mapping_is_reported(tmp_path, radiologist100):
    from lungcls.data.inspect import format_report, inspect_dataset

    pairs = real_pairs(radiologist100, 4)
    for k, (image, _) in enumerate(pairs):
        cls = ("Tuberculosis", "no finding")[k % 2]
        (tmp_path / "tb" / "Train" / cls / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "tb" / "Train" / cls / "images" / image.name)
    found = discover(tmp_path / "tb")
    assert found.manifest.class_names == ["Normal", "Tuberculosis"]
    report, _ = inspect_dataset(found, workers=0, progress=False)
    text = format_report(report)
    assert "classes: Normal, Tuberculosis" in text and "'no finding'" in text and "-> Normal (2 images)" in text


def test_crop_aligned_copies_are_found_as_the_curators_listed_them(shared_data):
    """covidqu-infseg holds pictures of covid19-radiography cropped tight to the chest: the crop-aligned search finds
    the pairs the shared data's curators listed, and no pair they did not list."""
    import csv

    from lungcls.data.duplicates import crop_aligned_pairs

    qu, rad = shared_data / "covidqu-infseg", shared_data / "covid19-radiography"
    rows = [r for r in csv.DictReader((qu / "overlap_shared.csv").open()) if r["existing_set"] == "covid19-radiography"]
    cropped = [r for r in rows if "other crop" in r["match"] and r["tier"] == "1"][:6]
    left = sorted({r["file"] for r in cropped})
    right = sorted({r["existing_file"] for r in rows if r["file"] in left})  # every picture listed with them
    others = sorted((rad / "Lung Segmentation Data" / "All" / "Normal" / "images").iterdir())[:6]
    paths = [qu / f for f in left] + [rad / f for f in right] + others
    images = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    n = len(left)
    listed = {(left.index(r["file"]), n + right.index(r["existing_file"])) for r in rows if r["file"] in left}
    found = set(crop_aligned_pairs(images, np.arange(n), np.arange(n, len(paths))))
    assert found <= listed, found - listed  # nothing the curators did not list
    assert len(found) >= len(listed) - 1, listed - found  # and (nearly) all they did

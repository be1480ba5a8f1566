"""The data a GPU call carries: one archive, sized as the device tool counts it (4 KiB blocks), that unpacks to the
same folders and a split made from the original PNGs; nothing left out, and a pack that would not fit refused."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import REPO, small_copy

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_pack  # noqa: E402

COVIDQU_PART = "COVID-QU-Ex Dataset/Infection Segmentation Data/Infection Segmentation Data"


def pixels(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def covidqu_small(tmp_path_factory, shared_data) -> Path:
    """Real COVID-QU-Ex images: 4 of each split and class, with lung and infection masks."""
    dst = tmp_path_factory.mktemp("pack") / "covidqu-infseg"
    small_copy(shared_data / "covidqu-infseg", dst, per_class=4)
    for img in dst.rglob("images/*.png"):  # small_copy copies lung masks; the infection masks travel too
        src = shared_data / "covidqu-infseg" / img.relative_to(dst)
        inf = src.parent.parent / "infection masks" / img.name
        (img.parent.parent / "infection masks").mkdir(exist_ok=True)
        (img.parent.parent / "infection masks" / img.name).write_bytes(inf.read_bytes())
    return dst


def test_disk_usage_counts_blocks_not_bytes(tmp_path):
    for k in range(10):
        (tmp_path / f"f{k}.png").write_bytes(b"x" * 100)  # 10 files of 100 bytes: 10 blocks of 4 KiB
    assert gpu_pack.disk_kib([tmp_path]) == 10 * 4 + 4  # and one block for the folder
    assert gpu_pack.disk_kib([tmp_path / "f0.png"]) == 4


def test_lossless_pack_unpacks_to_the_same_pictures_and_a_split_made_from_the_originals(covidqu_small, tmp_path):
    index = gpu_pack.pack([covidqu_small], tmp_path / "data.tar", gpu_pack.LOSSLESS, split=True, margin_mib=4, carry=[])
    originals = sorted(p for p in covidqu_small.rglob("*") if p.is_file())
    assert index["files"] == len(originals) and index["image_error"]["max"] == 0
    assert index["masks"] == 2 * index["images"]  # lung and infection masks, none left out
    unpacked = tmp_path / "unpacked"
    gpu_pack.unpack(tmp_path / "data.tar", unpacked)
    for f in originals:
        copy = unpacked / covidqu_small.name / f.relative_to(covidqu_small)
        if f.suffix == ".png":
            assert np.array_equal(pixels(copy), pixels(f)), f
        else:
            assert copy.read_bytes() == f.read_bytes(), f
    rows = list(csv.DictReader((unpacked / "split.csv").open()))
    assert {r["split"] for r in rows} == {"Train", "Val", "Test"} and len(rows) == index["images"]
    assert all(Path(r["image"]).is_file() and Path(r["image"]).is_relative_to(unpacked) for r in rows)


def test_a_lossy_pack_states_its_error_and_keeps_masks_exact(covidqu_small, tmp_path):
    index = gpu_pack.pack([covidqu_small], tmp_path / "data.tar", 95, split=False, margin_mib=4, carry=[])
    assert index["quality"] == 95 and 0 < index["image_error"]["max"] <= 16 and index["image_error"]["mean"] < 2
    gpu_pack.unpack(tmp_path / "data.tar", tmp_path / "unpacked")
    for mask in covidqu_small.rglob("*masks/*.png"):
        assert np.array_equal(pixels(tmp_path / "unpacked" / covidqu_small.name / mask.relative_to(covidqu_small)),
                              pixels(mask))  # fmt: skip


def test_a_pack_that_would_not_fit_is_refused_and_nothing_is_written(covidqu_small, tmp_path):
    with pytest.raises(SystemExit, match="KiB"):
        gpu_pack.pack([covidqu_small], tmp_path / "data.tar", gpu_pack.LOSSLESS, split=False, margin_mib=63.9, carry=[])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_whole_covidqu_infseg_travels_in_one_call_with_a_4_mib_margin(shared_data, tmp_path):
    """The pack the GPU plan sends (every image of covidqu-infseg, WebP q90, masks exact, the split), by the count
    the device tool makes: checkout + archive <= 60 MiB."""
    out = tmp_path / "covidqu.tar"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_pack.py"), "pack",
                             str(shared_data / "covidqu-infseg"), "--out", str(out), "--quality", "90", "--split"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    kib = gpu_pack.travel_kib([out])
    assert kib <= gpu_pack.LIMIT_KIB - 4 * 1024, kib
    assert '"images": 4384' in result.stdout and '"masks": 8768' in result.stdout


def test_an_existing_archive_or_a_full_folder_is_not_replaced_without_force(tmp_path):
    (tmp_path / "data.tar").write_bytes(b"mine")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "kept.txt").write_text("mine")
    script = str(REPO / "benchmarks" / "gpu_pack.py")
    for args in (["pack", str(tmp_path), "--out", str(tmp_path / "data.tar")],
                 ["unpack", str(tmp_path / "data.tar"), str(tmp_path / "dest")]):  # fmt: skip
        result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
        assert result.returncode == 2 and "--force" in result.stderr and len(result.stderr.splitlines()) == 1
    assert (tmp_path / "data.tar").read_bytes() == b"mine" and (tmp_path / "dest" / "kept.txt").read_text() == "mine"

"""The GPU check rehearsed the way the GPU machine runs it: from a copy of the repository with nothing beside
it, the data passed as the argument, tiny models (SMOKE=1); every step must end well and write its results."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import small_copy

REPO = Path(__file__).resolve().parents[1]
SHARED = ("ieee8023-radiologist100", "ieee8023-v7labs427", "nih-cxr8", "covid19-radiography")


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, shared_data):
    """A copy of the tracked repository in a folder with no ``../shared``, and small real data elsewhere."""
    root = tmp_path_factory.mktemp("gpu")
    repo = root / "box" / "lungcls"
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip(f"{REPO} is not a git checkout: the rehearsal copies the tracked files (git ls-files)")
    files = listed.stdout.split()
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    assert not (repo.parent / "shared").exists() and not (repo / ".whl").exists()
    data = root / "data"
    for name in SHARED:
        small_copy(shared_data / name, data / "shared" / name, per_class=8)
    small_copy(shared_data / "covidqu-infseg", data / "covidqu" / "covidqu-infseg", per_class=6)
    return repo, data


def rehearse(repo: Path, part: str, data: Path, out: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LUNGCLS_DATA"}
    env.update(SMOKE="1", PYTHONPATH=str(repo / "src"), RUNS=str(out.parent / f"runs{part}"),
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")  # fmt: skip
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", part, str(data), str(out)], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    steps = (out / "steps.txt").read_text().splitlines()
    assert steps and all(": exit 0," in s for s in steps), "\n".join(steps) + "\n" + result.stdout[-3000:]
    return result.stdout


@pytest.mark.slow
def test_part_1_shared_sets_accuracy_and_eager_speed(isolated, tmp_path):
    repo, data = isolated
    rehearse(repo, "1", data / "shared", tmp_path / "gpu1")
    out = tmp_path / "gpu1"
    for name in ("split_shared.log", "seg_shared_eval_seg_test.md", "cls_shared_raw_eval_test.md",
                 "cls_shared_masked_eval_test.md", "cls_shared_masked_config.json", "throughput_cpu.json",
                 "throughput_cpu.md"):  # fmt: skip
        assert (out / name).is_file(), name
    table = (out / "seg_shared_eval_seg_test.md").read_text()
    assert "ieee8023-v7labs427" in table  # Dice per set
    assert "| weighted avg |" in (out / "cls_shared_masked_eval_test.md").read_text()
    assert "whole Pipeline.predict" in (out / "throughput_cpu.md").read_text()


@pytest.mark.slow
def test_part_2_covidqu_accuracy_data_throughput_and_compiled_speed(isolated, tmp_path):
    repo, data = isolated
    rehearse(repo, "2", data / "covidqu", tmp_path / "gpu2")
    out = tmp_path / "gpu2"
    for name in ("seg_covidqu_eval_seg_val.md", "seg_covidqu_eval_seg_test.md", "cls_covidqu_raw_eval_test.md",
                 "cls_covidqu_masked_eval_test.md", "data_throughput_cpu.json", "compiled/throughput_cpu.json"):  # fmt: skip
        assert (out / name).is_file(), name

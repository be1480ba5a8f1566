"""The GPU plan rehearsed the way the GPU machine runs it: from a copy of the repository with nothing beside it,
each call carrying one archive made by gpu_pack.py (sized as the device tool counts), tiny models (SMOKE=1), a
budget in seconds that every step keeps; the recipe study ranks on Val and evaluates Test for its choice alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import small_copy

REPO = Path(__file__).resolve().parents[1]
SHARED = ("ieee8023-radiologist100", "ieee8023-v7labs427", "nih-cxr8", "covid19-radiography")
BUDGETS = {"covidqu": 110, "shared": 80}  # seconds: the tiny models end well inside; the rehearsal checks they do


@pytest.fixture(scope="module")
def box(tmp_path_factory, shared_data):
    """A copy of the tracked repository in a folder with no ``../shared``, and its two archives in .gpu_data/."""
    root = tmp_path_factory.mktemp("gpu")
    repo = root / "box" / "lungcls"
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip(f"{REPO} is not a git checkout: the rehearsal copies the tracked files (git ls-files)")
    for f in listed.stdout.splitlines():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    assert not (repo.parent / "shared").exists() and not (repo / ".whl").exists()
    data = root / "data"
    for name in SHARED:
        small_copy(shared_data / name, data / name, per_class=8)
    small_copy(shared_data / "covidqu-infseg", data / "covidqu-infseg", per_class=6)
    env = clean_env(repo)
    packs = {"covidqu": ([data / "covidqu-infseg"], ["--quality", "95", "--infection-split"]),
             "shared": ([data / n for n in SHARED], [])}  # fmt: skip
    for part, (roots, extra) in packs.items():
        cmd = [sys.executable, "benchmarks/gpu_pack.py", "pack", *map(str, roots), "--out", f".gpu_data/{part}.tar",
               "--split", *extra]  # fmt: skip
        made = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr[-2000:]
    return repo


def clean_env(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LUNGCLS_DATA"}
    env.update(PYTHONPATH=str(repo / "src"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    return env


def call(repo: Path, part: str, out: Path, **env: str) -> str:
    """One device call as the plan makes it: the size check, then gpu_check.sh with its budget."""
    size = subprocess.run([sys.executable, "benchmarks/gpu_pack.py", "size", "--carry", f".gpu_data/{part}.tar"],
                          cwd=repo, env=clean_env(repo), capture_output=True, text=True)  # fmt: skip
    kib = int(size.stdout.split()[0])
    assert kib <= 60 * 1024, size.stdout  # 64 MiB less the 4 MiB margin
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", part, f".gpu_data/{part}.tar", str(out),
                             str(BUDGETS[part])], cwd=repo, env={**clean_env(repo), "SMOKE": "1",
                            "WORK": str(out.parent / f"work-{part}"), **env}, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    took = int(re.search(r"exit 0, (\d+) s of", (out / "steps.txt").read_text()).group(1))
    assert took <= BUDGETS[part], (out / "steps.txt").read_text()
    assert "0 failed" in (out / "recipe_study.md").read_text()
    return result.stdout


@pytest.mark.slow
def test_the_plan_both_calls_within_their_budgets(box, tmp_path):
    out = tmp_path / "gpu1"
    call(box, "covidqu", out)
    table = (out / "recipe_study.md").read_text()
    for mode in ("raw", "masked-gt", "masked", "masked-cropped"):
        assert f"| {mode} | 1 |" in table, table
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    chosen = json.loads((out / "recipe_study.json").read_text())["chosen"]["classifier"]
    searched = [r for r in runs if r["stage"] == "cls"]
    assert len({r["name"] for r in searched}) >= 2 and all(r.get("test") is None for r in searched)
    for r in searched:  # Test evaluated for the chosen point alone, after the ranking
        assert (out / "runs" / f"cls-{r['name']}-s{r['seed']}" / "eval_test.md").is_file() == (r["name"] == chosen)
    analysis = (out / "analysis.md").read_text()  # the seed experiment analysed as the study analyses its runs
    assert "masked-cropped - raw" in analysis and "seeds and clusters resampled" in analysis
    infection = out / "infection-run"  # the infection segmenter, trained beside the study, comes back to be packaged
    assert "infection: exit 0" in (infection / "steps.txt").read_text(), (out / "infection.log").read_text()[-2000:]
    assert (infection / "eval_seg_test.md").is_file() and (out / "infection-candidate" / "MODEL_CARD.md").is_file()
    candidate = json.loads((out / "infection-candidate" / "config.json").read_text())
    assert candidate["model"]["target"] == "infection" and candidate["detector"]["threshold"] is not None
    winners = {k: (out / f"winner_{k}.json").read_text().replace("\n", "") for k in ("seg", "cls")}

    out2 = tmp_path / "gpu2"
    call(box, "shared", out2, WINNER_SEG=winners["seg"], WINNER_CLS=winners["cls"])
    table = (out2 / "recipe_study.md").read_text()
    assert "| masked-cropped | 1 |" in table and "(not searched here)" in table
    assert json.loads((out2 / "winner_cls.json").read_text()) == json.loads(winners["cls"])

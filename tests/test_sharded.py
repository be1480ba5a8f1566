"""``torchrun --nproc_per_node 2 -m lungcls predict``: two CPU processes (gloo) share the inputs and write exactly the
outputs one process writes; killed halfway, the same command goes on and skips the parts already done."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lungcls.cli import app

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed beside Python"),
]


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> Path:
    base = shared_data / "covidqu-infseg" / "COVID-QU-Ex Dataset" / "Infection Segmentation Data"
    folder = tmp_path_factory.mktemp("cxrs")
    for c in ("COVID-19", "Normal"):
        for p in sorted((base / "Infection Segmentation Data" / "Val" / c / "images").iterdir())[:5]:
            shutil.copy(p, folder / p.name)
    return folder


def torchrun(inputs: Path, bundle: Path, out: Path, *extra: str, **kw) -> subprocess.Popen:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "lungcls", "predict", str(inputs),
           "--model", str(bundle), "--out", str(out), "--device", "cpu", "--batch-size", "2", *extra]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, **kw)  # fmt: skip


def test_two_ranks_write_what_one_process_writes(inputs, serve_bundle, tmp_path):
    one = CliRunner().invoke(app, ["predict", str(inputs), "--model", str(serve_bundle), "--out", str(tmp_path / "one"),
                                   "--device", "cpu", "--explain", "-q"])  # fmt: skip
    assert one.exit_code == 0, one.output
    run = torchrun(inputs, serve_bundle, tmp_path / "two", "--explain", "--shard-size", "3")
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    for name in ("predictions.csv", "decisions.md"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert (
        sorted(p.name for p in (tmp_path / "two" / "explain").iterdir())
        == sorted(p.name for p in (tmp_path / "one" / "explain").iterdir())
        and len(list((tmp_path / "one" / "explain").iterdir())) == 10
    )
    assert not (tmp_path / "two.parts").exists()  # merged, then removed


def test_killed_halfway_the_same_command_goes_on_where_it_stopped(inputs, serve_bundle, tmp_path):
    out, parts = tmp_path / "out", tmp_path / "out.parts"
    first = torchrun(inputs, serve_bundle, out, "--shard-size", "1", "--explain")
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.csv"))) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    import psutil

    for proc in [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]:
        proc.kill()  # a crash: torchrun and every rank (each in its own session) at once
    first.wait()
    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=10)
    done = len(list(parts.glob("part-*.csv")))
    assert not out.exists() and 2 <= done < 10, done
    again = torchrun(inputs, serve_bundle, out, "--shard-size", "1", "--explain")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "were done before; skipped" in err, err[-3000:]
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 11 and not parts.exists()
    (tmp_path / "x.parts").mkdir()
    (tmp_path / "x.parts" / "started.json").write_text('{"inputs": ["something else"]}')
    other = torchrun(inputs, serve_bundle, tmp_path / "x", "--shard-size", "1")
    _, err = other.communicate(timeout=600)
    assert other.returncode != 0 and "holds the parts of another command" in err

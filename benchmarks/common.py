"""Helpers shared by the benchmark scripts: the machine's description and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$LUNGCLS_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("LUNGCLS_DATA", REPO.parent / "shared" / "data"))


def machine() -> dict:
    """CPU, GPU and library versions, recorded beside every figure."""
    import torch

    import lungcls

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lungcls": lungcls.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return info


def write_results(
    name: str, payload: dict, table: str, out_dir: Path | None = None, command: str | None = None
) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` (the table plus the command and machine).

    ``command`` is what to quote when the caller is not the script the user ran (default: this Python command).
    """
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    command = command or "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    payload = {"command": command, "machine": machine(), **payload}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    m = payload["machine"]
    md = (
        f"# {name}\n\n{table}\n\nCommand: `{payload['command']}`  \n"
        f"Machine: {m['cpu']} ({m['cpu_count']} cores), GPU: {m['gpu'] or 'none'}, "
        f"torch {m['torch']}, lungcls {m['lungcls']}, {m['date']}\n"
    )
    (out_dir / f"{name}.md").write_text(md)
    return out_dir / f"{name}.json"

"""Running a repository script (a benchmark) as a user runs it: its own process, the checkout's ``src`` first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(script: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """``python script args...`` with the checkout's ``src`` on PYTHONPATH; never raises on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)

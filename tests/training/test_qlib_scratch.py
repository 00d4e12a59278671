"""Qlib's per-process scratch directory does not outlive its process, even one that ends like a Ray worker
(without running ``atexit`` handlers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INIT = "from qmlops.training._compat import ensure_qlib_initialised as e; e(); import os; {end}"


def _run(tmp: Path, end: str) -> None:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", INIT.format(end=end)], env=env, check=True, timeout=300)


def test_no_qlib_scratch_directory_is_left_behind(tmp_path: Path) -> None:
    _run(tmp_path, "os._exit(0)")  # a worker's end: no atexit
    assert len(list(tmp_path.glob("qmlops-qlib-*"))) == 1
    _run(
        tmp_path, "pass"
    )  # the next initialisation sweeps the dead process's directory; its own goes at exit
    assert list(tmp_path.glob("qmlops-qlib-*")) == []

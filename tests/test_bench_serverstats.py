"""bench/serverstats.py: a server's CPU is its whole process tree (uvicorn's workers are
children of the process the load benchmark starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from serverstats import pids_cpu_s, process_tree_cpu_s  # noqa: E402  (bench/ is no package)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n" \
       "import sys; sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(30)"


def test_the_tree_counts_a_busy_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        own = pids_cpu_s([os.getpid()])
        child_cpu = pids_cpu_s([child.pid])
        tree = process_tree_cpu_s(os.getpid())
        assert own is not None and child_cpu is not None and tree is not None
        assert child_cpu >= 0.25  # it burnt 0.3 s of CPU before saying done
        assert tree >= own + child_cpu
        assert process_tree_cpu_s(child.pid) == pytest.approx(child_cpu, abs=0.05)
    finally:
        child.kill()
        child.wait()


def test_a_missing_process_has_no_tree() -> None:
    assert process_tree_cpu_s(2**22 + 12345) is None
    assert pids_cpu_s([2**22 + 12345]) == 0.0

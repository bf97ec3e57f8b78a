"""A re-index killed with SIGKILL mid-build: the old index keeps serving, no stale lock blocks
the next re-index, and that one succeeds. The build runs in a real subprocess (the library's
``reindex`` with a progress callback that writes a marker and then holds the build open), killed
once the marker appears, while it holds the build lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatbot.config import Settings
from chatbot.retrieval.index import active_version, reindex
from chatbot.retrieval.search import Retriever

BUILD = """
import sys, time
from pathlib import Path
from chatbot.config import Settings
from chatbot.retrieval.index import reindex

marker = Path(sys.argv[1])

def progress(done, total, stage):
    marker.write_text(f"{stage} {done}/{total}")
    time.sleep(600)  # hold the build (and its lock) open until the test kills this process

reindex(Settings(), full=True, progress=progress)
"""


def _env(s: Settings) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "CHATBOT_VAR_DIR": str(s.var_dir), "CHATBOT_KNOWLEDGE_BASE": str(s.knowledge_base),
            "CHATBOT_EMBEDDING_BACKEND": "torch", "CHATBOT_TORCH_THREADS": "1"}


def _lock_is_free(s: Settings) -> bool:
    with (s.resolved_index_dir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_killed_reindex_leaves_the_old_index_serving(settings: Settings,
                                                       tmp_path: Path) -> None:
    s = settings.model_copy(update={"embedding_backend": "torch", "torch_threads": 1})
    old = reindex(s, progress=False).version
    serving = Retriever(s)
    assert serving.search("how long is delivery")[0].document.record_id == "ship-001"

    # The knowledge base changes, and a full re-index of it is killed mid-build.
    faq = s.knowledge_base / "faq.csv"
    faq.write_text(faq.read_text() + "gift-001,payments,Do you sell gift cards?,"
                   "Yes: gift cards from 10 to 500 dollars.,gift card\n")
    marker = tmp_path / "building"
    build = subprocess.Popen([sys.executable, "-c", BUILD, str(marker)], env=_env(s),
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert build.poll() is None, build.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the build never reached its progress marker"
            time.sleep(0.05)
        assert not _lock_is_free(s)  # mid-build: the killed process holds the lock
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(30)
        build.stderr.close()  # type: ignore[union-attr]
    assert build.returncode == -signal.SIGKILL

    # The old version is still the active one, and still answers, here and in a new reader.
    assert active_version(s) == old
    assert serving.search("how long is delivery")[0].document.record_id == "ship-001"
    fresh = Retriever(s)
    assert fresh.index_version == old
    assert fresh.search("how do I reset my password")[0].document.record_id == "acc-001"

    # No stale lock: the kernel released it with the process; the next re-index succeeds.
    assert _lock_is_free(s)
    report = reindex(s, progress=False)
    assert report.rebuilt and report.added == 1
    assert active_version(s) == report.version != old
    serving.reload()
    assert serving.search("do you sell gift cards")[0].document.record_id == "gift-001"
    serving.embedder.close()  # their micro-batching threads
    fresh.embedder.close()


def test_what_a_build_killed_while_publishing_leaves_is_cleaned_up(settings: Settings) -> None:
    s = settings.model_copy(update={"embedding_backend": "torch", "torch_threads": 1})
    old = reindex(s, progress=False).version
    root = s.resolved_index_dir
    # A kill between writing the new version and the atomic pointer swap leaves these.
    half = root / ".tmp-20990101T000000000000-abcdef"
    half.mkdir()
    (half / "vectors.npy").write_bytes(b"partial")
    (root / ".ACTIVE.0123456789abcdef").write_text("20990101T000000000000-abcdef")
    assert active_version(s) == old
    reader = Retriever(s)
    assert reader.index_version == old  # the half-written version is never served
    reader.embedder.close()

    assert not reindex(s, progress=False).rebuilt  # nothing changed; the leftovers go anyway
    assert not half.exists() and not list(root.glob(".ACTIVE.*"))
    assert active_version(s) == old

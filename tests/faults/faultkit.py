"""Real parts for the fault tests: a private PostgreSQL server (initdb + pg_ctl in a temporary
folder, on a free port) that a test can stop and start again, a uvicorn server thread for an
app, a tiny real language model that says a chosen text over and over, and the count of live
generation threads.

Import from the fault tests as ``from faultkit import ...`` (pytest puts tests/faults on the
path). Everything started here is stopped by the context managers, even when a test fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from chatbot.generation.local import GENERATION_THREAD


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_scripted_lm(path: Path, text: str) -> Path:
    """The tiny test LM (``tests/tiny_lm.py``) made to repeat ``text`` forever under greedy
    decoding: its generation config biases, after each run of previous tokens, the token that
    comes next in ``text`` (transformers' ``sequence_bias``). A real model and a real generate
    loop, with a predictable answer: long enough to be cut or abandoned mid-way, with sentences
    the support gate can judge."""
    from tiny_lm import build_tiny_lm
    from transformers import AutoTokenizer, GenerationConfig

    build_tiny_lm(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The answer starts after the chat template's assistant opener.
    seq = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"] + ids * 3
    for context in range(1, 8):  # the shortest context that makes every next token unique
        rules: dict[tuple[int, ...], int] = {}
        if all(rules.setdefault(tuple(seq[i - context:i]), seq[i]) == seq[i]
               for i in range(context, len(seq))):
            break
    else:
        raise ValueError(f"cannot script {text!r}: it repeats itself too much")
    config = GenerationConfig.from_pretrained(path)
    config.sequence_bias = [[[*key, nxt], 100.0] for key, nxt in rules.items()]
    config.save_pretrained(path)
    return path


def generation_threads() -> list[threading.Thread]:
    """The in-process generator's threads still alive in this process."""
    return [t for t in threading.enumerate() if t.name == GENERATION_THREAD and t.is_alive()]


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port in a thread; yields the base
    URL and stops the server afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# --- a private PostgreSQL server ------------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl live: Debian's versioned folder (newest first), else PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary folder, listening on 127.0.0.1:``port``.

    initdb refuses to run as root, so as root every server command runs as the ``postgres``
    OS user (``subprocess``'s ``user=``) and the folder is handed to that user."""

    def __init__(self, bindir: Path, run_as: str | None) -> None:
        self.bindir = bindir
        self.run_as = run_as
        self.root = Path(tempfile.mkdtemp(prefix="chatbot-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.run_as,
                                cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")

    def start(self) -> None:
        # Its own socket folder and port; fsync off: a test cluster need not survive power loss
        # (a fast shutdown still checkpoints, so stop/start keeps every commit).
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if pidfile.is_file():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):  # then the server we started
                with suppress(OSError, ValueError):            # goes by its process id
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, removed afterwards; skips the test (saying why) when the
    server binaries or, as root, the ``postgres`` OS user are missing."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install "
                    "postgresql to run the database-outage test")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' OS user to run initdb as")
        run_as = "postgres"
    server = PrivatePostgres(bindir, run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()

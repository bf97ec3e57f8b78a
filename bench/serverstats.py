"""The server side of a load run: a blank, migrated database for it (a SQLite file, or a fresh
PostgreSQL schema whose connections carry its name as application name), and what the run costs
the machine, read from Linux's /proc: CPU seconds of a server's whole process tree (uvicorn's
supervisor and its workers), CPU of the PostgreSQL backends that serve the run, and a wait until
a freshly started server has finished warming up.

Why the tree: with ``--workers N`` the process the bench started only supervises; the requests
run in its children. Why the PostgreSQL backends: on one box the database's own CPU competes for
the same two cores, and it is not in the server's numbers. Elsewhere than Linux every function
returns None and the reports say "n/a".
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

PROC = Path("/proc")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_ticks(fields: list[str], children: bool = True) -> int:
    # utime, stime (fields 14-15), cutime, cstime (16-17): reaped children count too, so a
    # process that exits during a run still has its CPU in the total.
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if children else 0)


def process_tree_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` and every live descendant (plus reaped ones)."""
    if not PROC.is_dir():
        return None
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = _cpu_ticks(fields)
    if pid not in ticks:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(ticks[p] for p in tree) / os.sysconf("SC_CLK_TCK")


def pids_cpu_s(pids: list[int]) -> float | None:
    """User+system CPU seconds of these processes (those still alive)."""
    found = pids_cpu_map(pids)
    return None if found is None else sum(found.values())


def pids_cpu_map(pids: list[int]) -> dict[int, float] | None:
    """pid -> user+system CPU seconds, for those of ``pids`` still alive."""
    if not PROC.is_dir():
        return None
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = _cpu_ticks(fields, children=False) / os.sysconf("SC_CLK_TCK")
    return found


def cpu_since(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds the processes of ``after`` used since ``before`` (a process new since then
    counts from zero). A process that exited in between is in neither: its share is lost, so
    with connections opened and closed during a run this is a lower bound."""
    if before is None or after is None:
        return None
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def postgres_backends(admin_url: str, application_name: str) -> list[int]:
    """Pids of the PostgreSQL backends whose connections carry ``application_name`` (the
    server under test sets it in its URL); [] when the database is elsewhere or unreadable."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": application_name})
            return [int(r[0]) for r in rows]
    except Exception:  # a remote database or no rights: the report says n/a
        return []
    finally:
        engine.dispose()


def wait_until_idle(pid: int, *, idle_share: float = 0.05, window_s: float = 2.0,
                    timeout_s: float = 300.0) -> float:
    """Seconds waited until the process tree used less than ``idle_share`` of one core over
    ``window_s`` (its start-up work, e.g. the suggestion statistics each worker builds in the
    background, is done), or ``timeout_s``. Measurements start only then."""
    started = time.monotonic()
    before = process_tree_cpu_s(pid)
    while time.monotonic() - started < timeout_s:
        time.sleep(window_s)
        after = process_tree_cpu_s(pid)
        if before is None or after is None:
            break
        if after - before < idle_share * window_s:
            break
        before = after
    return time.monotonic() - started


def prepare_database(backend: str, tmp: Path) -> tuple[str, str | None]:
    """(url, PostgreSQL schema to drop afterwards) for a blank, migrated database. On
    PostgreSQL the connections carry the schema's name as application name (see
    ``postgres_backends``)."""
    from chatbot.conversations.engine import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{(tmp / 'load.db').as_posix()}"
        upgrade(url)
        return url, None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(pg_base())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    scoped = make_url(pg_base()).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema})
    url = scoped.render_as_string(hide_password=False)
    upgrade(url)
    return url, schema


def pg_base() -> str:
    """The PostgreSQL server to create schemas in."""
    return (os.environ.get("CHATBOT_BENCH_DATABASE_URL")
            or os.environ.get("CHATBOT_TEST_DATABASE_URL") or DEFAULT_PG)


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(pg_base())
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()

"""Helpers for the tests against a live server: the app in a real uvicorn thread, a real webhook
receiver, an SSE reader, and what the browser tests share.

``serve_app`` runs an app on a free loopback port in a uvicorn thread for the length of a
``with`` block and gives its base URL; ``wait_until`` polls a condition that becomes true
asynchronously. ``WebhookReceiver`` is a real HTTP server on a free loopback port
(``http.server`` in a thread) that records every POST (path, headers, raw body) and answers
with the statuses it is told to (``fail_first``), or, given ``hold`` (a ``threading.Event``),
waits until it is set before answering, so tests can show a slow receiver never holds up a
chat. ``EventReader`` reads a Server-Sent Events stream in a background thread into a queue, so
a test can wait for the next event with a timeout; ``sse_events`` parses a whole SSE body (a
finished response) into (event, data) pairs. ``XSS``, ``open_widget`` and
``stored_conversation_id`` are for the browser tests (tests/ui/, whose conftest.py has the
browser and page fixtures).

Import them as ``from live_helpers import serve_app, WebhookReceiver`` (tests/ is on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

XSS = "<img src=x onerror=alert(1)>"  # markup a customer or an agent might type


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (browser events and background work
    reach the server asynchronously); fail with the last value when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout} s (last value {value!r})"
            return value
        time.sleep(0.1)


@contextlib.contextmanager
def serve_app(app: Any, name: str = "uvicorn") -> Iterator[str]:
    """Run ``app`` on a free 127.0.0.1 port (the OS picks it: no race for it) in a uvicorn
    thread while the block runs; yields its base URL, ``http://127.0.0.1:PORT``."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=60)
    assert server.started, "uvicorn did not start"
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def open_widget(page: Any, url: str) -> Any:
    """Open the example page of the app at ``url`` and the widget's panel on it; returns the
    message box."""
    from playwright.sync_api import expect

    page.goto(f"{url}/widget/example.html")
    page.get_by_role("button", name="Open chat: Pinecrest help").click()
    expect(page.get_by_role("dialog", name="Pinecrest help")).to_be_visible()
    return page.get_by_label("Type your message")


def stored_conversation_id(page: Any) -> str:
    """The conversation id the widget keeps in the page's localStorage (exactly one)."""
    ids = page.evaluate(
        "() => Object.keys(localStorage).filter(k => k.endsWith(':conversation'))"
        ".map(k => localStorage.getItem(k))"
    )
    assert len(ids) == 1, f"expected one stored conversation id, found {ids}"
    return str(ids[0])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    fail_first: int = 0  # answer 500 to this many calls, then 200
    status_after: int = 200
    hold: threading.Event | None = None  # answer only once this is set
    calls: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.calls.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                failing = len(receiver.calls) <= receiver.fail_first
                self.send_response(500 if failing else receiver.status_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, (
                f"webhook receiver got {len(self.calls)} call(s), expected {count}")
            time.sleep(0.05)
        return list(self.calls)


@dataclass
class SseEvent:
    name: str
    data: dict[str, Any]
    id: str | None


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, JSON data) of each event block of a finished SSE body, in order. Comment-only
    blocks (sse-starlette's keep-alive pings, ``: ping``) are skipped; any other block must
    name its event and carry JSON data, or the parse fails (KeyError / ValueError), so a
    malformed stream cannot pass a test."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = [line for line in block.splitlines() if not line.startswith(":")]
        if not fields:
            continue
        lines = dict(line.split(": ", 1) for line in fields)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


class EventReader:
    """Reads ``GET url`` as Server-Sent Events in a thread; ``next(...)`` waits for events."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.events: queue.Queue[SseEvent | BaseException] = queue.Queue()
        self.status: int | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventReader:
        self._thread.start()
        assert self._connected.wait(60), f"could not connect to {self.url}"
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._socket is not None:  # a real disconnect: the read returns, the server sees it
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            # The server pings every 15 s, so a 60 s read timeout only fires on a dead server.
            with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client, \
                    client.stream("GET", self.url, headers=self.headers) as response:
                stream = response.extensions.get("network_stream")
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                self.status = response.status_code
                self._connected.set()
                for block in self._blocks(response):
                    self.events.put(block)
        except BaseException as error:  # reported to the test by next(), unless stopping
            if not self._stop.is_set():
                self.events.put(error)
        finally:
            self._connected.set()

    def _blocks(self, response: httpx.Response) -> Iterator[SseEvent]:
        name, data, event_id = "message", [], None
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if not line:
                if data:
                    yield SseEvent(name, json.loads("\n".join(data)), event_id)
                name, data, event_id = "message", [], None
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "id":
                    event_id = value

    def next(self, name: str | None = None, timeout: float = 30.0) -> SseEvent:
        """The next event (of type ``name``, skipping others); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name or 'event'} arrived on {self.url}"
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if name is None or item.name == name:
                return item

"""Sources that fail the way real ones do, for the reliability tests.

A `FaultySource` is a loopback TCP proxy in front of a real peer (the sandbox OAuth
provider, PostgreSQL, MariaDB). A connection's settings point at the proxy once; the
test then switches the proxy's `Fault` (an outage, a slow answer, a cut connection) and
back to `PASS` ("the outage is over") without touching the connection. Every proxy of a
test runs on one event loop in a background thread, owned by `FaultySources`:

    with FaultySources() as sources:
        token_endpoint = sources.add("127.0.0.1", sandbox.port, status(503))
        ...  # settings: f"{token_endpoint.url}/oauth/token"
        token_endpoint.set(PASS)

=====================  =====================================================================
fault                  what a client meets
=====================  =====================================================================
PASS                   the peer itself (bytes forwarded both ways)
REFUSE                 nothing listens on the port: connection refused
SILENT                 the connection is accepted and never answered: a timeout
status(503)            an HTTP answer with that status (429 comes with ``Retry-After``)
slow(1.5)              the request reaches the peer that many seconds late, and is carried
                       out even when the client has given up by then (as a slow server does)
HEADERS_THEN_CLOSE     HTTP 200 headers promising a body, a few bytes of it, then the close
CUT                    the peer's first answer (a database's greeting), then the close
HOLD                   nothing until `release()`, then the peer: the test knows that
                       requests are in flight (`wait_held`) and decides when they go on
=====================  =====================================================================
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

CHUNK = 65536


@dataclass(frozen=True)
class Fault:
    """How a source misbehaves (the constants and constructors below); its str names it
    in connection names and messages ("refuse", "http_503", "slow_3s")."""

    kind: str
    status: int = 0
    delay: float = 0.0

    def __str__(self) -> str:
        if self.kind == "status":
            return f"http_{self.status}"
        if self.kind == "slow":
            return f"slow_{self.delay:g}s"
        return self.kind


PASS = Fault("pass")
REFUSE = Fault("refuse")
SILENT = Fault("silent")
HEADERS_THEN_CLOSE = Fault("headers_then_close")
CUT = Fault("cut")
HOLD = Fault("hold")


def status(code: int) -> Fault:
    """Answer every request with this HTTP status (5xx, 429) and a JSON error body."""
    return Fault("status", status=code)


def slow(seconds: float) -> Fault:
    """Wait this long, then pass the request on to the peer."""
    return Fault("slow", delay=seconds)


class FaultySources:
    """The event loop (a daemon thread) that runs every `FaultySource` of a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="faulty-sources", daemon=True
        )
        self.sources: list[FaultySource] = []

    def add(self, host: str, port: int, fault: Fault = PASS) -> FaultySource:
        """A new source on a free loopback port, in front of host:port."""
        source = FaultySource(self, host, port)
        self.call(source.open())
        self.sources.append(source)
        source.set(fault)
        return source

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run a coroutine on the sources' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for source in self.sources:
            self.call(source.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class FaultySource:
    """One misbehaving source on a loopback port of its own (see the module docstring)."""

    host = "127.0.0.1"

    def __init__(self, sources: FaultySources, upstream_host: str, upstream_port: int) -> None:
        self._sources = sources
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._gate = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.fault = PASS
        self.held = 0  # connections waiting at a HOLD gate now

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set(self, fault: Fault) -> None:
        """From now on, new connections meet `fault` (connections open already keep theirs)."""
        self._sources.call(self._switch(fault))

    def release(self) -> None:
        """Let the connections held at a HOLD gate go on to the peer; new ones pass too."""
        self._sources.call(self._open_gate())

    def wait_held(self, count: int, timeout: float = 20) -> None:
        """Until `count` connections wait at the HOLD gate (the client is mid-request)."""
        deadline = time.monotonic() + timeout
        while self.held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url}: {self.held} of {count} connections arrived")
            time.sleep(0.01)

    # --- on the sources' loop ------------------------------------------------------------

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._stop_listening()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _switch(self, fault: Fault) -> None:
        if fault == REFUSE:
            self._stop_listening()
        elif self._server is None:
            await self.open()  # the same port again
        if fault == HOLD:
            self._gate = asyncio.Event()
        self.fault = fault

    async def _open_gate(self) -> None:
        self.fault = PASS
        self._gate.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(self.fault, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._behave(fault, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up first: what clients of a faulty source do
        finally:
            writer.close()

    async def _behave(
        self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if fault.kind == "silent":
            while await reader.read(CHUNK):
                pass  # swallowed, never answered
        elif fault.kind == "status":
            await _read_request(reader)
            writer.write(_status_answer(fault.status))
            await writer.drain()
        elif fault.kind == "headers_then_close":
            await _read_request(reader)
            writer.write(PROMISE_BROKEN)
            await writer.drain()
        elif fault.kind == "cut":
            await _forward(self._upstream, reader, writer, first_answer_only=True)
        else:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "hold":
                await self._wait_at_gate()
            await _forward(self._upstream, reader, writer)

    async def _wait_at_gate(self) -> None:
        self.held += 1
        try:
            await self._gate.wait()
        finally:
            self.held -= 1


PROMISE_BROKEN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2048\r\n"
    b'Connection: close\r\n\r\n{"active": true, "access_'
)


def _status_answer(code: int) -> bytes:
    body = b'{"error": "temporarily_unavailable"}'
    retry = b"Retry-After: 1\r\n" if code == 429 else b""
    return (
        f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + retry
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def _read_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP request to its end: closing with unread bytes would reset the
    connection and could destroy the answer before the client reads it."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value.strip()))


async def _forward(
    upstream: tuple[str, int],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    first_answer_only: bool = False,
) -> None:
    """Bytes both ways between the client and the peer until either side closes (or,
    with `first_answer_only`, until the peer's first answer has reached the client)."""
    peer_reader, peer_writer = await asyncio.open_connection(*upstream)
    try:
        to_client = _one_chunk if first_answer_only else _pump
        pumps = [
            asyncio.ensure_future(_pump(reader, peer_writer)),
            asyncio.ensure_future(to_client(peer_reader, writer)),
        ]
        _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    finally:
        peer_writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(CHUNK):
        sink.write(data)
        await sink.drain()


async def _one_chunk(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    data = await source.read(CHUNK)
    sink.write(data)
    await sink.drain()

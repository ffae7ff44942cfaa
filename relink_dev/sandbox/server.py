"""Run a :class:`SandboxProvider` on a threaded werkzeug server (loopback by default)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

from .demo import seed_demo
from .provider import SandboxProvider

__all__ = ["DEFAULT_PORT", "SandboxServer", "serve"]

DEFAULT_PORT = 8765
_POLL_INTERVAL = 0.1
log = logging.getLogger("relink.sandbox")


class _QuietRequestHandler(WSGIRequestHandler):
    """Request log at DEBUG, path only: query strings may carry codes or tokens."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(getattr(self, "path", "")).path
        log.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)


class SandboxServer:
    """Background-thread server: ``start()``, ``.url``, ``stop()``; restartable on its port."""

    def __init__(
        self,
        provider: SandboxProvider | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.provider = provider if provider is not None else SandboxProvider()
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (known once started)."""
        if not self.port:
            raise RuntimeError("sandbox server has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Bind (same port as before on a restart) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("sandbox server already running")
        server = self._bind()
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"relink-sandbox-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket, join the thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Blocking variant for the CLI (Ctrl-C stops it)."""
        server = self._bind()
        print(f"Relink sandbox provider on {self.url} (Ctrl-C to stop)", flush=True)
        server.serve_forever(poll_interval=_POLL_INTERVAL)

    def _bind(self) -> BaseWSGIServer:
        # Bind ourselves so a busy port raises OSError (werkzeug would sys.exit).
        family = select_address_family(self.host, self.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(get_sockaddr(self.host, self.port, family))
            sock.listen(128)
            server = make_server(
                self.host,
                sock.getsockname()[1],
                self.provider.wsgi_app,
                threaded=True,
                request_handler=_QuietRequestHandler,
                fd=sock.fileno(),  # werkzeug dup()s it
            )
        finally:
            sock.close()
        self.port = server.port
        return server

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    state_file: Path | None = None,
    demo: bool = True,
) -> None:
    """Run the sandbox provider in the foreground (``relink sandbox``)."""
    if not _is_loopback_host(host):
        # Authlib accepts plain http only for loopback URLs (RFC 8252). A sandbox bound to
        # another interface is still a local dev tool, so allow http in this CLI process
        # only; in-process SandboxServer use on 127.0.0.1 never needs this.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    provider = SandboxProvider(state_file=state_file)
    if demo:
        seed_demo(provider)
    SandboxServer(provider, host, port).serve_forever()

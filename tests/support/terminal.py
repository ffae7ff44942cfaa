"""A command run on a real pseudo-terminal, as a person at a keyboard runs it: prompts
are read as they appear and answered line by line (hidden ones through /dev/tty)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self


class Terminal:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.execve(argv[0], list(argv), dict(env))
        self.seen = ""  # not yet matched by `expect`
        self.transcript = ""  # everything the terminal showed
        self.exit_code: int | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.exit_code is None:  # a failed test: the command is not left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)

    def expect(self, text: str, timeout: float = 30.0) -> str:
        """Read until `text` appears; returns what was read up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.seen}")
        upto = self.seen.index(text) + len(text)
        shown, self.seen = self.seen[:upto], self.seen[upto:]
        return shown

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the exit; (exit code, the rest of the output)."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"the command did not end; the terminal shows:\n{self.seen}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code, self.seen

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        text = chunk.decode(errors="replace").replace("\r\n", "\n")
        self.seen += text
        self.transcript += text
        return bool(chunk)

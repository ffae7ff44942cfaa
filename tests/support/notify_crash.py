"""Test helper: an email run that stops at a crash point, where the test SIGKILLs it.

Two ways in:

- a command, for one crash (tests/integration/test_email_crash.py)::

      RELINK_TEST_CRASH_AT=after_claim|after_send RELINK_TEST_NOW=<ISO 8601> \\
          python -m tests.support.notify_crash

  Settings come from the environment (RELINK_*), as for `relink notify`. At the crash
  point of its first email the process prints ``at <point>`` and waits.

- `run_in_child`, the target of a forkserver child (tests/support/email_trials.py): one
  `CrashRun` of a trial, started together with the trial's other runs. It reports on a
  pipe: ``("at", point, disconnection_id)`` at a crash point, then ``("done", counts)``
  or ``("error", traceback)`` if not killed first.

The crash points, in the order one email passes them:

- ``before_claim``: the run has loaded the email and is about to claim it;
- ``after_claim``: the claim is committed, the request not sent yet;
- ``during_request``: the request goes out; the run carries on, and the test kills it
  while SendGrid holds the request (the trial scripts a hang for that email);
- ``after_send``: SendGrid has answered, the result is not recorded yet.

The core calls hooks at the two points after the claim (`SendHooks`); the child reaches
``before_claim`` by wrapping `claim`, and ``during_request`` by wrapping the mailer.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from relink.app import Relink
from relink.emailing import ledger
from relink.emailing.due import DueEmail
from relink.emailing.mailer import Attempt, Mailer, OutgoingEmail, mailer_for
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from relink.models import NotificationState
from relink.settings import Settings

POINTS = ("after_claim", "after_send")
"""The points of the command."""

CRASH_POINTS = ("before_claim", "after_claim", "during_request", "after_send")
"""The points of `run_in_child`."""

KILL_WAIT = 120.0
"""How long a stopped run waits for its SIGKILL before giving up loudly."""

START_WAIT = 60.0
"""How long a run waits for the trial's other runs to be ready."""

RETRY_WAIT_SCALE = 0.01
"""Retry waits (Retry-After, backoff) pass 100 times faster in a trial's run: which
emails are retried matters here, not how long the run waits between requests."""


def main() -> int:
    point = os.environ["RELINK_TEST_CRASH_AT"]
    if point not in POINTS:
        raise SystemExit(f"RELINK_TEST_CRASH_AT must be one of {POINTS}, got {point!r}")
    now = datetime.fromisoformat(os.environ["RELINK_TEST_NOW"])

    def stop_here(*_: Any) -> None:
        print(f"at {point}", flush=True)
        time.sleep(KILL_WAIT)  # the test kills us here
        raise SystemExit("not killed in time")

    app = Relink()
    app.ensure_schema()
    send_due(
        app, now=now, policy=NotifyPolicy(concurrency=1), hooks=SendHooks(**{point: stop_here})
    )
    print("finished", flush=True)
    return 0


# --- one run of a trial, in a forkserver child ---------------------------------------------


@dataclass(frozen=True)
class CrashRun:
    """One email run of a trial.

    `crashes` are (point, disconnection id) pairs shared by every run of the trial: the
    first run to reach one stops there (a token file in `tokens` decides), whichever run
    that is, so a crash fires however the concurrent runs share the emails out.
    """

    settings: dict[str, Any]  # Settings(**settings)
    now: datetime
    policy: NotifyPolicy
    crashes: frozenset[tuple[str, int]]
    tokens: Path


class _Reporter:
    """The child's end of the pipe, shared by the run's worker threads."""

    def __init__(self, channel: Connection) -> None:
        self.channel = channel
        self.lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self.lock:
            self.channel.send(message)


class _Stops:
    """Where this run stops (or, during a request, announces itself) to be killed."""

    def __init__(self, run: CrashRun, reporter: _Reporter) -> None:
        self.run = run
        self.reporter = reporter

    def _first_to_reach(self, point: str, disconnection_id: int) -> bool:
        if (point, disconnection_id) not in self.run.crashes:
            return False
        token = self.run.tokens / f"{point}-{disconnection_id}"
        try:
            os.close(os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False  # another run got there first and was killed there
        return True

    def announce(self, point: str, disconnection_id: int) -> bool:
        if not self._first_to_reach(point, disconnection_id):
            return False
        self.reporter.send("at", point, disconnection_id)
        return True

    def stop(self, point: str, disconnection_id: int) -> None:
        if self.announce(point, disconnection_id):
            time.sleep(KILL_WAIT)  # the test kills the process here
            os._exit(3)  # not killed in time: the test sees exit code 3

    def hooks(self) -> SendHooks:
        return SendHooks(
            after_claim=lambda item: self.stop("after_claim", item.disconnection_id),
            after_send=lambda item, _: self.stop("after_send", item.disconnection_id),
        )

    def wrap_claim(self) -> None:
        """Stop before `claim` (in this child process only; the core has no hook there)."""
        real_claim = ledger.claim

        def claim(app: Relink, item: DueEmail, **kwargs: Any) -> ledger.HeldClaim | None:
            self.stop("before_claim", item.disconnection_id)
            return real_claim(app, item, **kwargs)

        ledger.claim = claim


@dataclass
class _Announcing:
    """A mailer that says which email's request is going out, then sends it."""

    mailer: Mailer
    stops: _Stops

    @property
    def delivered_state(self) -> NotificationState:
        return self.mailer.delivered_state

    def send(self, email: OutgoingEmail) -> Attempt:
        self.stops.announce("during_request", int(email.custom_args["disconnection_id"]))
        return self.mailer.send(email)


def _hurried_sleep(seconds: float) -> None:
    time.sleep(seconds * RETRY_WAIT_SCALE)


def run_in_child(run: CrashRun, channel: Connection, start: Barrier) -> None:
    """One whole email run (`send_due`, what `relink notify` runs), reporting on `channel`.

    It connects to the database first, then waits at `start` for the trial's other runs:
    they begin together and race for the same emails."""
    reporter = _Reporter(channel)
    try:
        app = Relink(Settings(_env_file=None, **run.settings))
        stops = _Stops(run, reporter)
        stops.wrap_claim()
        with app.engine.connect():
            pass
        start.wait(START_WAIT)
        summary = send_due(
            app,
            now=run.now,
            mailer=_Announcing(mailer_for(app.settings), stops),
            policy=run.policy,
            hooks=stops.hooks(),
            sleep=_hurried_sleep,
        )
        reporter.send("done", summary.counts)
    except BaseException:  # noqa: BLE001 - the test reports whatever broke the run
        reporter.send("error", traceback.format_exc())


if __name__ == "__main__":
    raise SystemExit(main())

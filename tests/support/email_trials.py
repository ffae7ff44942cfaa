"""Seeded, randomized trials of the email run under crashes, concurrent runs and SendGrid
faults (tests/reliability/test_email_exactly_once.py).

One trial:

1. `TrialPlan.draw(seed)`: a few disconnections, due (new, or released by an earlier
   run) and not due (too recent, closed, emailed before, unknown before); for each due
   one, SendGrid's answers to its first requests (429 with Retry-After, 500, 400, a hang
   past the client timeout, a lost 202); 2-4 runs with their batch size and concurrency;
   one crash point, or two (before claim, after claim, during the request, after the
   202).
2. The runs start at once, each in a process of its own (`Fleet`); the first run to
   reach a crash point is SIGKILLed there.
3. The dust settles: SendGrid is healthy again and a clean run follows, after the claim
   lease (crashed runs' claims become `unknown`).
4. `Verdict`: what SendGrid delivered per disconnection (the endpoint's records) against
   what the database recorded.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from relink.app import Relink
from relink.emailing.mailer import SendGridMailer
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.settings import Settings
from tests.support.emaildata import API_KEY, RUN, World
from tests.support.notify_crash import CRASH_POINTS, CrashRun, run_in_child
from tests.support.sendgrid_endpoint import (
    NO_RESPONSE,
    AcceptThenHang,
    BadRequest,
    Hang,
    RateLimited,
    ReceivedRequest,
    Response,
    SendGridEndpoint,
    ServerError,
)

RERUN = RUN + timedelta(hours=1)
"""The clean run: after the claim lease (15 min), before a `recent` one is due."""

CLIENT_TIMEOUT = 0.5
"""Seconds the trial runs wait for SendGrid's reply (RELINK_EMAIL_TIMEOUT): each hang
costs a run this long."""

HANG = 60.0
"""A hang outlasts the client timeout; released when the trial's runs are over."""

TRIAL_TIMEOUT = 90.0
"""Seconds for a trial's runs to finish or be killed (they take a second or two)."""

DUE_KINDS = ("due", "released")
NOT_DUE_KINDS = ("recent", "closed", "sent", "unknown")
REFUSAL = BadRequest("Invalid to email address", "personalizations.0.to.0.email")
SURE_FAULTS = (
    (RateLimited(retry_after=1), REFUSAL),
    (ServerError(), Hang(HANG)),
    (RateLimited(retry_after=1), AcceptThenHang(HANG)),
)
"""The answers one email of each trial always meets, by seed: any three consecutive
seeds have SendGrid answer 429, 500, 400, a hang and a lost 202."""


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailPlan:
    kind: str  # one of DUE_KINDS or NOT_DUE_KINDS
    responses: tuple[Response, ...] = ()  # SendGrid's first answers to it, then 202s


@dataclass(frozen=True)
class RunPlan:
    batch_size: int
    concurrency: int


@dataclass(frozen=True)
class Crash:
    point: str  # one of CRASH_POINTS
    email: int  # index into TrialPlan.emails


@dataclass(frozen=True)
class TrialPlan:
    seed: int
    emails: tuple[EmailPlan, ...]
    runs: tuple[RunPlan, ...]
    crashes: tuple[Crash, ...]

    @classmethod
    def draw(cls, seed: int) -> TrialPlan:
        """The trial of `seed`. Its first crash point and the faults of one email that is
        no crash target cycle with the seed, so that any four consecutive seeds plan
        every crash point and every kind of answer; the rest is drawn at random."""
        rng = random.Random(seed)
        emails = [
            EmailPlan(rng.choices(DUE_KINDS, weights=(3, 1))[0], _faults(rng))
            for _ in range(rng.randint(3, 6))
        ]
        emails += [EmailPlan(kind) for kind in rng.sample(NOT_DUE_KINDS, rng.randint(1, 3))]
        rng.shuffle(emails)
        due = [i for i, email in enumerate(emails) if email.kind in DUE_KINDS]
        targets = rng.sample(due, rng.choices((1, 2), weights=(2, 1))[0])
        points = [CRASH_POINTS[seed % len(CRASH_POINTS)], rng.choice(CRASH_POINTS)]
        crashes = tuple(Crash(points[n], target) for n, target in enumerate(targets))
        for crash in crashes:
            emails[crash.email] = EmailPlan(
                emails[crash.email].kind, _answers_at(crash.point, rng, emails[crash.email])
            )
        spared = next(i for i in due if i not in targets)  # 3+ due, at most 2 targets
        emails[spared] = EmailPlan(emails[spared].kind, SURE_FAULTS[seed % len(SURE_FAULTS)])
        runs = tuple(
            RunPlan(batch_size=rng.randint(2, 4), concurrency=rng.randint(1, 3))
            for _ in range(rng.randint(2, 4))
        )
        return cls(seed, tuple(emails), runs, crashes)

    def describe(self) -> str:
        """The plan, one line per email and run: for a failure message."""
        crash_at = {c.email: c.point for c in self.crashes}
        lines = [f"trial seed {self.seed}:"]
        for i, email in enumerate(self.emails):
            answers = ", ".join(_short(r) for r in email.responses) or "202"
            crash = f"  <- crash {crash_at[i]}" if i in crash_at else ""
            lines.append(f"  email {i}: {email.kind}, SendGrid answers {answers}{crash}")
        lines += [
            f"  run {n}: batch_size={r.batch_size} concurrency={r.concurrency}"
            for n, r in enumerate(self.runs)
        ]
        return "\n".join(lines)


def _faults(rng: random.Random) -> tuple[Response, ...]:
    """SendGrid's answers to one email's first requests: half of them healthy."""
    if rng.random() < 0.5:
        return ()
    transient = [
        rng.choice([RateLimited(retry_after=rng.randint(1, 3)), ServerError()])
        for _ in range(rng.randint(0, 3))
    ]
    final = rng.choice([(), (), (), (REFUSAL,), (Hang(HANG),), (AcceptThenHang(HANG),)])
    return (*transient, *final)


def _answers_at(point: str, rng: random.Random, email: EmailPlan) -> tuple[Response, ...]:
    """A crash target's answers: a 202 to crash after, a hang to crash during."""
    if point == "after_send":
        return ()
    if point == "during_request":
        return (rng.choice([Hang(HANG), AcceptThenHang(HANG)]),)
    return email.responses


def _short(response: Response) -> str:
    match response:
        case RateLimited(retry_after=after):
            return f"429 (Retry-After {after})"
        case ServerError():
            return "500"
        case BadRequest():
            return "400"
        case Hang():
            return "hang"
        case AcceptThenHang():
            return "202 lost (hang)"
    return type(response).__name__


# --- the runs ------------------------------------------------------------------------------


@dataclass
class FleetReport:
    kills: list[tuple[str, int]] = field(default_factory=list)  # (point, disconnection id)
    finished: list[dict[str, int]] = field(default_factory=list)  # counts of runs that ended
    errors: list[str] = field(default_factory=list)  # runs that broke (not killed)


@dataclass
class _Child:
    process: Any  # a forkserver Process
    reader: Connection
    killed: bool = False


class Fleet:
    """Email runs, each in a fresh forkserver child (~15 ms to start: the server has
    imported Relink once), connected and then released together; a run that reports a
    crash point is SIGKILLed."""

    PRELOAD = (
        "tests.support.notify_crash",
        "sqlalchemy.dialects.postgresql.psycopg",
        *(f"connectors.{module}" for module in ("api_key", "mysql", "oauth2", "postgres")),
    )

    def __init__(self, endpoint: SendGridEndpoint) -> None:
        self.endpoint = endpoint
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(self.PRELOAD))

    def run(self, runs: Sequence[CrashRun], timeout: float = TRIAL_TIMEOUT) -> FleetReport:
        report = FleetReport()
        start = self.context.Barrier(len(runs))
        children = [self._start(run, start) for run in runs]
        listening = {child.reader: child for child in children}
        deadline = time.monotonic() + timeout
        try:
            while listening:
                left = deadline - time.monotonic()
                if left <= 0:
                    report.errors.append(f"runs still going after {timeout} s (killed)")
                    break
                for reader in wait(list(listening), left):
                    assert isinstance(reader, Connection)
                    try:
                        message = reader.recv()
                    except EOFError:  # the run is over: it exited or was killed
                        listening.pop(reader).process.join(10)
                        continue
                    self._handle(message, listening[reader], report)
        finally:
            for child in children:
                child.process.kill()  # only those still running: a timeout, or a test error
                child.process.join(10)
                child.reader.close()
        report.errors += [
            f"run exited with code {child.process.exitcode}"
            for child in children
            if child.process.exitcode not in (0, -signal.SIGKILL)
        ]
        return report

    def _start(self, run: CrashRun, start: Barrier) -> _Child:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=run_in_child, args=(run, writer, start), daemon=True)
        process.start()
        writer.close()
        return _Child(process, reader)

    def _handle(self, message: tuple[Any, ...], child: _Child, report: FleetReport) -> None:
        match message:
            case ("at", point, disconnection_id) if not child.killed:
                if point == "during_request":
                    self._wait_for_request(disconnection_id)
                child.process.kill()  # SIGKILL
                child.killed = True
                report.kills.append((point, disconnection_id))
            case ("done", counts):
                report.finished.append(counts)
            case ("error", text):
                report.errors.append(text)

    def _wait_for_request(self, disconnection_id: int, timeout: float = 3.0) -> None:
        """Until SendGrid holds the request (the run is then waiting for its reply)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(_about(r) == disconnection_id for r in self.endpoint.requests):
                return
            time.sleep(0.005)


# --- the verdict ---------------------------------------------------------------------------


def _about(request: ReceivedRequest) -> int | None:
    """The disconnection a mail-send request was about (its custom arg)."""
    value = request.body.get("custom_args", {}).get("disconnection_id")
    return int(value) if value is not None else None


@dataclass(frozen=True)
class Outcome:
    """One disconnection at the end of a trial."""

    kind: str
    state: str | None  # its notification's state
    received: int  # emails SendGrid delivered
    refused: bool  # SendGrid answered 400 to a request for it

    def problem(self) -> str | None:
        """What is wrong, if anything. A due one is received once when recorded sent, at
        most once when unknown, never when SendGrid refused it (failed, after a 400), and
        is never left unsent; a not-due one is neither emailed nor changed."""
        if self.kind in NOT_DUE_KINDS:
            expected = {"recent": None, "closed": None, "sent": "sent", "unknown": "unknown"}
            if self.received or self.state != expected[self.kind]:
                return f"not due, yet received {self.received} and is now {self.state}"
            return None
        if self.received > 1:
            return f"DUPLICATE: received {self.received} emails"
        if self.state == "sent" and self.received != 1:
            return "recorded sent, yet nothing was delivered"
        if self.state == "failed" and not self.refused:
            return "recorded failed, yet SendGrid never refused it"
        if self.state not in ("sent", "unknown", "failed"):
            return f"LOST: due, never sent (state {self.state}, received {self.received})"
        return None


@dataclass
class Verdict:
    plan: TrialPlan
    outcomes: dict[int, Outcome]  # by disconnection id
    fleet: FleetReport
    answers: Counter[str]  # SendGrid's answers during the trial, by kind

    def problems(self) -> list[str]:
        found = [f"disconnection {d}: {p}" for d, o in self.outcomes.items() if (p := o.problem())]
        return found + [f"a run broke: {error}" for error in self.fleet.errors]

    def failure_message(self) -> str:
        ids = ", ".join(f"email {i} = disconnection {d}" for i, d in enumerate(self.outcomes))
        return "\n".join(
            [
                *self.problems(),
                self.plan.describe(),
                f"  ids: {ids}",
                f"  killed: {self.fleet.kills}; finished: {self.fleet.finished}",
                f"replay: RELINK_EMAIL_TRIAL_SEED={self.plan.seed} pytest "
                "tests/reliability/test_email_exactly_once.py",
            ]
        )


def judge(
    plan: TrialPlan,
    ids: Sequence[int],
    states: dict[int, str],
    requests: Iterable[ReceivedRequest],
    fleet: FleetReport,
) -> Verdict:
    requests = list(requests)
    received = Counter(_about(r) for r in requests if r.delivered)
    refused = {_about(r) for r in requests if r.status == 400}
    outcomes = {
        d: Outcome(email.kind, states.get(d), received[d], d in refused)
        for d, email in zip(ids, plan.emails, strict=True)
    }
    return Verdict(plan, outcomes, fleet, Counter(_answer_kind(r) for r in requests))


def _answer_kind(request: ReceivedRequest) -> str:
    if request.status == NO_RESPONSE:
        return "202 lost" if request.delivered else "hang"
    return str(request.status)


# --- a trial, start to end -----------------------------------------------------------------


class Trials:
    """Runs trials one after another on one database and one endpoint.

    The trials share `now` (RUN) and leave nothing due behind, so a trial sees only its
    own due disconnections; each is judged by its own ids.
    """

    def __init__(
        self, world: World, settings: Settings, endpoint: SendGridEndpoint, tokens: Path
    ) -> None:
        self.world = world
        self.endpoint = endpoint
        self.tokens = tokens
        self.fleet = Fleet(endpoint)
        self.settings = {
            "database_url": settings.database_url,
            "data_dir": str(settings.data_dir),
            "secret_keys": settings.secret_keys.get_secret_value(),
            "base_url": settings.base_url,
            "sendgrid_api_key": API_KEY,
            "sendgrid_host": endpoint.url,
            "email_timeout": CLIENT_TIMEOUT,
        }

    def run(self, plan: TrialPlan) -> Verdict:
        self.endpoint.reset()
        ids = [self._seed(email) for email in plan.emails]
        for d, email in zip(ids, plan.emails, strict=True):
            self.endpoint.script_for("disconnection_id", str(d), *email.responses)
        fleet = self.fleet.run([self._crash_run(plan, ids, run) for run in plan.runs])
        self._clean_rerun(self.world.app)
        states = {d: n.state for d, n in self.world.notifications().items()}
        return judge(plan, ids, states, self.endpoint.requests, fleet)

    def _seed(self, email: EmailPlan) -> int:
        world, day = self.world, timedelta(days=1)
        if email.kind == "due":
            return world.broken(RUN - timedelta(hours=25))
        if email.kind == "recent":
            return world.broken(RUN - timedelta(hours=12))
        disconnection = world.broken(RUN - 3 * day)
        if email.kind == "closed":
            world.close(disconnection, RUN - 2 * day)
        else:  # released (due again), sent or unknown (never again)
            world.notified(disconnection, email.kind, RUN - 2 * day)
        return disconnection

    def _crash_run(self, plan: TrialPlan, ids: Sequence[int], run: RunPlan) -> CrashRun:
        folder = self.tokens / str(plan.seed)
        folder.mkdir(parents=True, exist_ok=True)
        return CrashRun(
            settings=self.settings,
            now=RUN,
            policy=NotifyPolicy(batch_size=run.batch_size, concurrency=run.concurrency),
            crashes=frozenset((c.point, ids[c.email]) for c in plan.crashes),
            tokens=folder,
        )

    def _clean_rerun(self, app: Relink) -> None:
        """SendGrid healthy again, then one run after the lease, then every request in."""
        self.endpoint.clear_scripts()
        self.endpoint.release_hangs()
        mailer = SendGridMailer(API_KEY, self.endpoint.url, timeout=10)
        send_due(app, now=RERUN, mailer=mailer, policy=NotifyPolicy(batch_size=50))
        self.endpoint.wait_idle()


# --- the tally -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What many trials did, in one line (docs/reliability.md)."""

    seeds: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    answers: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        self.seeds.append(verdict.plan.seed)
        self.outcomes += verdict.outcomes.values()
        self.kills.update(point for point, _ in verdict.fleet.kills)
        self.runs += len(verdict.plan.runs)
        self.answers.update(verdict.answers)

    def due(self, state: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind in DUE_KINDS and state in (None, o.state)]

    @property
    def duplicates(self) -> int:
        return sum(o.received > 1 for o in self.outcomes)

    def line(self) -> str:
        unknown = self.due("unknown")
        not_due = [o for o in self.outcomes if o.kind in NOT_DUE_KINDS]
        kills = ", ".join(f"{p} {self.kills[p]}" for p in CRASH_POINTS)
        answers = ", ".join(
            f"{kind}×{self.answers[kind]}" for kind in ("429", "500", "400", "hang", "202 lost")
        )
        return (
            f"trials={len(self.seeds)} emails={len(self.due())} due: "
            f"{len(self.due('sent'))} received exactly once, unknown={len(unknown)} "
            f"({sum(o.received for o in unknown)} of them received once), "
            f"refused by SendGrid (400)={len(self.due('failed'))} "
            f"({sum(o.received for o in self.due('failed'))} received), "
            f"duplicates={self.duplicates}; {len(not_due)} not due, "
            f"{sum(o.received for o in not_due)} received; "
            f"{sum(self.kills.values())} of {self.runs} runs SIGKILLed ({kills}); "
            f"SendGrid answered {answers}; seeds {min(self.seeds)}-{max(self.seeds)}"
        )

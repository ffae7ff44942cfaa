"""`relink run`: everything, locally, on the embedded defaults, under one supervisor.

Sets up the app database, loads the demo account, then starts (each in a process
group of its own, output in `data/logs/<name>.log`):

- the sandbox OAuth provider (`relink sandbox`) that the demo's OAuth connections use,
- a Prefect server with its UI (`prefect server start`, state under `data/prefect`),
- the web pages (`relink web`),
- `prefect.serve` of every deployment (`python -m deployments.serve`),

runs one check sweep so the demo shows broken connections, and prints where
everything is. SIGINT (Ctrl-C) or SIGTERM stops every process it started: SIGINT,
then SIGTERM, then SIGKILL to each process group, each after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

import httpx
from prefect.exceptions import ObjectNotFound

from relink import db, demo
from relink.app import Relink
from relink.errors import RelinkError
from relink.settings import PROJECT_ROOT
from relink.timeutil import utcnow

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import State

READY = "Relink is ready"
GRACE_SECONDS = 5.0
START_TIMEOUT = 90.0


class RunError(RelinkError):
    """`relink run` could not start; one line says why."""


@dataclass(frozen=True)
class RunConfig:
    host: str = "127.0.0.1"
    web_port: int = 8000
    prefect_port: int = 4200
    sandbox_port: int = 8765
    first_sweep: bool = True

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"

    def ports(self) -> list[tuple[str, str, int]]:
        return [
            ("web pages", "--web-port", self.web_port),
            ("Prefect server", "--prefect-port", self.prefect_port),
            ("sandbox provider", "--sandbox-port", self.sandbox_port),
        ]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Supervisor:
    """Starts children in their own process groups and stops them all, in reverse."""

    log_dir: Path
    out: TextIO = sys.stdout
    grace: float = GRACE_SECONDS
    children: list[Child] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path = PROJECT_ROOT
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Ctrl-C reaches us only
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        self.say(f"started {name} (pid={process.pid}, log {log_path})")
        return child

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                tail = child.log_tail()
                raise RunError(
                    f"{child.name} exited with code {child.process.returncode}"
                    + (f"; last lines of {child.log_path}:\n{tail}" if tail else "")
                )

    def stop_all(self) -> None:
        """Stop every child, the last started first; wait until each group is gone."""
        for child in reversed(self.children):
            self.stop(child)
        self.children.clear()

    def stop(self, child: Child) -> None:
        for sig, wait in ((signal.SIGINT, self.grace), (signal.SIGTERM, self.grace)):
            if not _group_alive(child):
                break
            _signal_group(child, sig)
            _wait_group(child, wait)
        if _group_alive(child):
            _signal_group(child, signal.SIGKILL)
            _wait_group(child, self.grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=1)
        self.say(f"stopped {child.name}")

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _group_alive(child: Child) -> bool:
    child.process.poll()  # reap the leader once it exits, so the group can empty
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(child: Child, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _group_alive(child):
        time.sleep(0.1)


# --- checks -----------------------------------------------------------------------------


def ensure_ports_free(config: RunConfig) -> None:
    for what, option, port in config.ports():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((config.host, port))
            except OSError:
                raise RunError(
                    f"port {port} ({what}) on {config.host} is already in use; "
                    f"stop what uses it or choose another with {option}"
                ) from None


def http_status(url: str, *, timeout: float = 2.0) -> int:
    """The status of a GET (0 when nothing answers): the sandbox's and the pages' health."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return 0


@contextlib.contextmanager
def prefect_client(config: RunConfig) -> Iterator[SyncPrefectClient]:
    """Prefect's own client for this run's server, whatever PREFECT_API_URL says here."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: config.prefect_api_url}):
        client = get_client(httpx_settings={"timeout": 5.0}, sync_client=True)
    with client:
        yield client


def prefect_health(config: RunConfig) -> Exception | None:
    """None when this run's Prefect API answers its health check, else what went wrong."""
    with prefect_client(config) as client:
        return client.api_healthcheck()


def served_deployments(config: RunConfig) -> list[str]:
    """`flow/deployment` names the Prefect server knows (empty when it does not answer)."""
    try:
        with prefect_client(config) as client:
            deployments = client.read_deployments()
            flows = {flow.id: flow.name for flow in client.read_flows()}
    except (OSError, httpx.HTTPError):
        return []
    return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


def wait_until(
    what: str,
    ready: Callable[[], bool],
    supervisor: Supervisor,
    timeout: float = START_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(ready):
        supervisor.check_alive()
        if time.monotonic() > deadline:
            raise RunError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.25)


def _answers(ready: Callable[[], bool]) -> bool:
    """`ready()`, with a refused connection, an error answer (a busy server's 503) or a
    deployment the server does not know yet as "not yet"."""
    try:
        return ready()
    except (OSError, ValueError, httpx.HTTPError, ObjectNotFound):
        return False


# --- the run ----------------------------------------------------------------------------


def child_env(config: RunConfig, app: Relink) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RELINK_BASE_URL", config.web_url)
    env.update(
        {
            "RELINK_DATA_DIR": str(app.settings.data_dir),
            "RELINK_DATABASE_URL": app.settings.effective_database_url,
            "PREFECT_HOME": str(app.settings.data_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def prepare(app: Relink, config: RunConfig, out: TextIO) -> None:
    """Migrate, load the demo, give it sign-ins, and tell the sandbox its tokens."""
    db.upgrade(app.engine)
    now = utcnow()
    with app.transaction() as session:
        created = demo.seed(session, app.vault, now=now, sandbox_url=config.sandbox_url)
        demo.set_demo_passwords(session, now=now)
        tokens = demo.sandbox_tokens(session, app.vault)
    write_sandbox_state(sandbox_state_file(app), tokens)
    out.write(
        f"demo account {demo.ACCOUNT!r} {'loaded' if created else 'already present'} "
        f"in {app.settings.masked()['database_url']}\n"
    )


def sandbox_state_file(app: Relink) -> Path:
    return app.settings.data_dir / "sandbox.json"


def write_sandbox_state(path: Path, tokens: Sequence[dict[str, Any]]) -> None:
    """Make the sandbox know the demo's OAuth tokens: live ones stay (or become) valid,
    the one marked `revoked` is revoked."""
    from relink_dev.sandbox import DEFAULT_SCOPE, DEMO_CLIENT_ID, SandboxProvider, seed_demo

    provider = SandboxProvider(state_file=path)
    seed_demo(provider)
    for token in tokens:
        if token["revoked"]:
            provider.revoke_token_set(token["access_token"])
        else:
            provider.learn_token_set(
                token["access_token"],
                token["refresh_token"],
                client_id=DEMO_CLIENT_ID,
                username=token.get("username") or "demo",  # whose account it is
                scope=DEFAULT_SCOPE,
            )


def run_once(
    config: RunConfig, supervisor: Supervisor, deployment: str, run_name: str
) -> tuple[str, State | None]:
    """Run a served deployment (`flow/deployment`) once and wait for it: its flow run id
    and final state. A run that did not complete is said on the terminal."""
    flow_run_id = ""

    def created() -> bool:
        nonlocal flow_run_id
        with prefect_client(config) as client:
            found = client.read_deployment_by_name(deployment)
            flow_run_id = str(client.create_flow_run_from_deployment(found.id, name=run_name).id)
        return True

    wait_until(f"a run of {deployment}", created, supervisor)
    state: State | None = None

    def finished() -> bool:
        nonlocal state
        with prefect_client(config) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
        return state is not None and state.is_final()

    wait_until(f"the {run_name}", finished, supervisor)
    if state is None or not state.is_completed():
        # e.g. CANCELLED: a scheduled sweep was running (one at a time, CANCEL_NEW)
        supervisor.say(
            f"note: the {run_name} ended {state.name if state else None}; see "
            f"{config.prefect_url}/runs/flow-run/{flow_run_id}"
        )
    return flow_run_id, state


def first_sweep(app: Relink, config: RunConfig, supervisor: Supervisor) -> dict[str, Any]:
    """Run the served check-connections deployment once and wait for it, so the demo
    shows broken connections and the Prefect UI shows a run with its artifact."""
    from relink.sweep.record import last_sweep

    flow_run_id, _state = run_once(
        config, supervisor, "check-connections/check-connections", "first check of relink run"
    )
    with app.sessions() as session:
        sweep = last_sweep(session) or {}
    return {**sweep.get("summary", {}), "flow_run_id": flow_run_id}


def first_emails(app: Relink, config: RunConfig, supervisor: Supervisor) -> dict[str, Any]:
    """Run the served send-disconnection-emails deployment once, after the first check,
    so the demo's connection broken for over 24 hours gets its one email (to the outbox
    on the embedded defaults) and the one whose credentials expire in 5 days its
    heads-up: the states each kind leaves, and the flow run id."""
    import sqlalchemy as sa

    from relink.models import HeadsUp, Notification

    flow_run_id, _state = run_once(
        config,
        supervisor,
        "send-disconnection-emails/send-disconnection-emails",
        "first email run of relink run",
    )
    with app.sessions() as session:
        states = dict(
            session.execute(
                sa.select(Notification.state, sa.func.count()).group_by(Notification.state)
            ).all()
        )
        heads_ups = dict(
            session.execute(sa.select(HeadsUp.state, sa.func.count()).group_by(HeadsUp.state)).all()
        )
    return {"states": states, "heads_ups": heads_ups, "flow_run_id": flow_run_id}


def relink_events(config: RunConfig) -> list[str]:
    """The names of Relink's events in this run's Prefect event feed (relink.events)."""
    from prefect.events.filters import EventFilter, EventNameFilter

    try:
        with prefect_client(config) as client:
            # 50: the server's most per page (the client's default of 100 is refused)
            page = client.read_events(
                EventFilter(event=EventNameFilter(prefix=["relink."])), limit=50
            )
    except (OSError, httpx.HTTPError):
        return []
    return sorted({event.event for event in page.events})


def wait_for_events(config: RunConfig, timeout: float = 30.0) -> list[str]:
    """Relink's events once the server has written them (it does so in batches)."""
    deadline = time.monotonic() + timeout
    while not (found := relink_events(config)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def self_check(config: RunConfig) -> list[tuple[str, bool, str]]:
    """What a person would look at first: the pages, the Prefect API, the deployments,
    and (after the first sweep) Relink's events in Prefect's event feed."""
    from deployments.definitions import DEPLOYMENTS

    login = http_status(f"{config.web_url}/login")
    problem = prefect_health(config)
    served = served_deployments(config)
    wanted = sorted(spec.full_name for spec in DEPLOYMENTS)
    feed = []
    if config.first_sweep:
        events = wait_for_events(config)
        feed = [("Relink events in Prefect's feed", bool(events), ", ".join(events) or "none")]
    return [
        ("web login page", login == 200, f"GET {config.web_url}/login -> {login}"),
        (
            "Prefect API",
            problem is None,
            f"{config.prefect_api_url}/health: {problem or 'healthy'}",
        ),
        (
            "served deployments",
            set(wanted) <= set(served),
            f"{len(set(wanted) & set(served))}/{len(wanted)} deployments",
        ),
        *feed,
    ]


@contextlib.contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(config: RunConfig, *, check: bool = False, out: TextIO = sys.stdout) -> int:
    """Start everything, wait for Ctrl-C (or, with `check`, verify and stop); exit code."""
    app = Relink()
    ensure_ports_free(config)
    supervisor = Supervisor(log_dir=app.settings.data_dir / "logs", out=out)
    code = 0
    with _signals_raise_interrupt():
        try:
            prepare(app, config, out)
            code = _start_and_wait(app, config, supervisor, check=check, out=out)
        except KeyboardInterrupt:
            supervisor.say("stopping (Ctrl-C)")
        finally:
            # a second Ctrl-C must not cut the shutdown short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            supervisor.stop_all()
            app.close()
    supervisor.say("all stopped")
    return code


def _start_and_wait(
    app: Relink, config: RunConfig, supervisor: Supervisor, *, check: bool, out: TextIO
) -> int:
    env = child_env(config, app)
    relink_cli = [sys.executable, "-c", "from relink.cli import main; main()"]
    supervisor.start(
        "prefect-server",
        [
            sys.executable,
            *("-m", "prefect", "server", "start"),
            *("--host", config.host, "--port", str(config.prefect_port)),
        ],
        env,
    )
    supervisor.start(
        "sandbox",
        [
            *relink_cli,
            *("sandbox", "--host", config.host, "--port", str(config.sandbox_port)),
            *("--state-file", str(sandbox_state_file(app))),
        ],
        env,
    )
    supervisor.start(  # with the Prefect API: page events in its feed, follow-ups as flow runs
        "web",
        [*relink_cli, "web", "--host", config.host, "--port", str(config.web_port)],
        {**env, "PREFECT_API_URL": config.prefect_api_url},
    )
    wait_until(
        "the sandbox provider",
        lambda: http_status(f"{config.sandbox_url}/_sandbox/health") == 200,
        supervisor,
    )
    wait_until("the Prefect server", lambda: prefect_health(config) is None, supervisor)
    supervisor.start(
        "serve",
        [sys.executable, "-m", "deployments.serve"],
        {**env, "PREFECT_API_URL": config.prefect_api_url},
    )
    wait_until("the web pages", lambda: http_status(f"{config.web_url}/login") == 200, supervisor)
    from deployments.definitions import DEPLOYMENTS

    wanted = {spec.full_name for spec in DEPLOYMENTS}
    wait_until(
        "the served deployments",
        lambda: wanted <= set(served_deployments(config)),
        supervisor,
    )
    summary = emails = None
    if config.first_sweep:
        summary = first_sweep(app, config, supervisor)
        emails = first_emails(app, config, supervisor)
    _print_ready(app, config, summary, emails, out)
    if check:
        results = self_check(config)
        for what, ok, detail in results:
            out.write(f"check {what}: {'ok' if ok else 'FAILED'} ({detail})\n")
        out.flush()
        return 0 if all(ok for _, ok, _ in results) else 1
    while True:
        supervisor.check_alive()
        time.sleep(0.5)


def _print_ready(
    app: Relink,
    config: RunConfig,
    summary: dict[str, Any] | None,
    emails: dict[str, Any] | None,
    out: TextIO,
) -> None:
    from relink.emailing.mailer import outbox_folder

    fix = demo.FINANCE_FIX
    password = f"password {fix['password']}" if fix["password"] else "the password left empty"
    lines = [
        f"{READY}:",
        f"  web pages    {config.web_url}",
        f"  Prefect UI   {config.prefect_url}",
        f"  events       {config.prefect_url}/events (Relink's relink.* events; alerts: "
        "docs/automations.md)",
        f"  sandbox      {config.sandbox_url} (the demo's OAuth provider)",
        f"  Prefect CLI  export PREFECT_API_URL={config.prefect_api_url}  "
        "(then `prefect deployment ls` in another terminal sees these deployments)",
        f"  sign in as   {demo.ADMIN[0]} (admin), {demo.MEMBER[0]} or {demo.OTHER[0]} "
        f"(members), password {demo.DEMO_PASSWORD}",
        f"  to fix       {demo.FINANCE!r}: Reconnect on its page with username "
        f"{fix['username']} and {password}",
    ]
    if summary is not None:
        outcomes = ", ".join(f"{v} {k}" for k, v in summary.get("outcomes", {}).items() if v)
        lines.append(
            f"  first check  {summary.get('checked', 0)} connection(s): {outcomes} "
            f"({config.prefect_url}/runs/flow-run/{summary['flow_run_id']})"
        )
    if emails is not None:
        states = ", ".join(f"{n} {state}" for state, n in sorted(emails["states"].items()))
        ahead = emails.get("heads_ups", {})
        ahead_states = ", ".join(f"{n} {state}" for state, n in sorted(ahead.items()))
        lines.append(
            f"  first emails {sum(emails['states'].values())} disconnection email(s)"
            f"{': ' + states if states else ''}; {sum(ahead.values())} expiry heads-up(s)"
            f"{': ' + ahead_states if ahead_states else ''} (admins: {config.web_url}/emails; "
            f"{config.prefect_url}/runs/flow-run/{emails['flow_run_id']})"
        )
    if not app.settings.sendgrid_api_key.get_secret_value():
        lines.append(f"  emails       to the outbox {outbox_folder(app.settings)} (nothing sent)")
    lines += [
        f"  logs         {app.settings.data_dir / 'logs'}",
        "Ctrl-C stops everything.",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()

"""`relink reconnect`, `relink datasets refresh` and `relink audit`."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from connectors.base import Field
from relink.cli._common import (
    WideOpt,
    app,
    console,
    err_console,
    fail,
    handle_errors,
    parse_pairs,
    print_json,
    print_table,
    secrets_from_env,
    transaction,
)
from relink.connections import get_visible, visible_filter
from relink.directory import get_actor, viewer_of
from relink.domain.broken import is_broken
from relink.followup.run import Verdict, plain_steps, run_followup
from relink.models import MAX_ID, AuditEvent, Connection, Role, User
from relink.reconnecting.errors import AccountReplacement
from relink.reconnecting.form import KIND_LABELS, ReconnectForm, reconnect_form
from relink.reconnecting.oauth import finish_oauth, oauth_result, start_oauth
from relink.reconnecting.replace import Reconnected, reconnect_with_secrets
from relink.refreshing.results import ERROR, RefreshPolicy, RefreshSummary
from relink.refreshing.run import refresh_many
from relink.refreshing.selection import select_datasets
from relink.timeutil import utcnow

CALLBACK_PATH = "/oauth/callback"

AsOpt = Annotated[str, typer.Option("--as", help="Act as this user (email).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(root: typer.Typer) -> None:
    from relink.cli.connections import datasets_app

    root.command("reconnect")(reconnect)
    root.command("audit")(audit_trail)
    datasets_app.command("refresh")(datasets_refresh)


# --- reconnect ------------------------------------------------------------------------


@handle_errors
def reconnect(
    connection_id: Annotated[
        int, typer.Argument(metavar="ID", min=1, max=MAX_ID, help="Connection id.")
    ],
    as_: AsOpt,
    check_only: Annotated[
        bool,
        typer.Option(
            "--check-only",
            help="Check the stored credentials again (the problem may have been fixed at "
            "the source); refresh the datasets when they work, else print the reconnect link.",
        ),
    ] = False,
    callback_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="OAuth: the local port that receives the provider's redirect "
            f"(http://127.0.0.1:PORT{CALLBACK_PATH}; 0 picks a free one). Without it the "
            "web pages' callback is used when they answer at RELINK_BASE_URL (they finish "
            "the reconnect), else a free port.",
        ),
    ] = None,
    code_url: Annotated[
        str | None,
        typer.Option(
            "--code-url",
            help="OAuth: finish with the URL the provider redirected your browser to "
            "(after `--no-wait`).",
        ),
    ] = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="OAuth: print the authorization URL and exit; finish with --code-url.",
        ),
    ] = False,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="A new value of a setting a reconnect may change: key=value (repeatable). "
            "Without it, a terminal prompts for each, the current value pre-filled.",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    secret_env: Annotated[
        list[str],
        typer.Option("--secret-env", help="A new secret from an environment variable: key=ENVVAR."),
    ] = [],  # noqa: B006
    replace_account: Annotated[
        bool,
        typer.Option(
            "--replace-account",
            help="Confirm that the new credentials may be another account's than the "
            'connection\'s ("This replaces max@acme.test with ann@acme.test"); without it '
            "such a reconnect is refused and changes nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Reconnect a connection with new credentials, validated together with any changed
    settings before they replace the old ones; a refused attempt changes nothing and is
    kept in the audit trail. Credentials of another account than the one the connection
    uses need --replace-account. A terminal is guided through prompts: each setting a
    reconnect may change (username, host ...; Enter keeps the current value), then each
    secret (no echo). Without a terminal, settings come from --set and secrets from
    --secret-env or one line each on stdin. OAuth connections print the provider's
    authorization URL and wait for its redirect. On success the datasets are refreshed."""
    relink = app()
    relink.ensure_schema()
    if (check_only or code_url) and (set_ or secret_env):
        given = "--check-only" if check_only else "--code-url"
        raise fail(f"--set and --secret-env start a reconnect; they do not go with {given}")
    if check_only:
        _check_only(connection_id, as_, as_json)
        return
    try:
        _reconnect(
            connection_id,
            as_,
            callback_port=callback_port,
            code_url=code_url,
            no_wait=no_wait,
            set_=set_,
            secret_env=secret_env,
            replace_account=replace_account,
            as_json=as_json,
        )
    except AccountReplacement as exc:
        raise fail(
            f"connection {connection_id}: {exc.line}; run again with --replace-account to "
            "confirm; nothing was changed"
        ) from None


def _reconnect(
    connection_id: int,
    as_: str,
    *,
    callback_port: int | None,
    code_url: str | None,
    no_wait: bool,
    set_: list[str],
    secret_env: list[str],
    replace_account: bool,
    as_json: bool,
) -> None:
    relink = app()
    form = reconnect_form(relink, as_, connection_id)
    if not form.oauth and (code_url or no_wait):
        raise fail(
            f"connection {connection_id} uses {KIND_LABELS[form.kind]}: --code-url and "
            "--no-wait are for OAuth connections"
        )
    if code_url:
        state, code = _code_and_state(code_url)
        done = asyncio.run(
            finish_oauth(
                relink,
                state=state,
                code=code,
                actor=as_,
                connection_id=connection_id,
                replace_account=replace_account,
            )
        )
        _print_reconnected(done, as_json)
        return
    interactive = sys.stdin.isatty()
    settings = parse_pairs(set_, "--set") or (_ask_settings(form) if interactive else {})
    secrets = secrets_from_env(parse_pairs(secret_env, "--secret-env"))
    if form.oauth:
        if interactive:  # the connection's own client secret: Enter keeps it
            secrets |= _read_secrets([f for f in form.secrets if f.name not in secrets], True)
        if callback_port is None and (no_wait or web_pages_answer(relink.settings.base_url)):
            _oauth_through_web(form, as_, no_wait, settings, secrets, as_json)
            return
        done = _oauth_with_listener(
            form, as_, callback_port or 0, no_wait, settings, secrets, replace_account
        )
        if done is None:
            return
    else:
        secrets |= _read_secrets([f for f in form.secrets if f.name not in secrets], False)
        done = asyncio.run(
            reconnect_with_secrets(
                relink,
                connection_id,
                actor=as_,
                secrets=secrets,
                settings=settings,
                replace_account=replace_account,
            )
        )
    _print_reconnected(done, as_json)


def _ask_settings(form: ReconnectForm) -> dict[str, str]:
    """One prompt per setting a reconnect may change, its current value pre-filled."""
    if form.settings:
        err_console.print(
            f"Reconnecting {form.connection!r} ({form.provider_name}): Enter keeps a value.",
            markup=False,
            highlight=False,
        )
    return {
        spec.name: typer.prompt(spec.label, default=current, show_default=bool(current))
        for spec, current in form.settings
    }


def _read_secrets(fields: list[Field], keep_when_empty: bool) -> dict[str, str]:
    """Each secret from a prompt without echo, or one line each from stdin."""
    interactive = sys.stdin.isatty()
    values: dict[str, str] = {}
    for spec in fields:
        if interactive:
            if keep_when_empty:
                suffix = " (Enter keeps the current one)"
            else:
                suffix = "" if spec.required else " (optional, Enter to leave out)"
            value = typer.prompt(
                f"New {spec.label.lower()}{suffix}",
                hide_input=True,
                default="" if not spec.required or keep_when_empty else None,
                show_default=False,
            )
        else:
            line = sys.stdin.readline()
            if not line and spec.required:
                raise fail(
                    f"no value for {spec.name!r} on stdin (one line per secret, in order: "
                    f"{', '.join(f.name for f in fields)})"
                )
            value = line.rstrip("\r\n")
        if not value and spec.required and not keep_when_empty:
            raise fail(f"{spec.name!r} may not be empty; nothing was changed")
        if value:
            values[spec.name] = value
    return values


def _code_and_state(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url.strip()).query)
    if "error" in query:
        reason = query.get("error_description", query["error"])[0]
        raise fail(f"the provider refused the sign-in: {query['error'][0]} ({reason})")
    state, code = query.get("state", [""])[0], query.get("code", [""])[0]
    if not state or not code:
        raise fail(
            "--code-url: expected the redirect URL with ?code=…&state=… (copy it from the "
            "browser's address bar after allowing access)"
        )
    return state, code


class _Callback:
    """The one redirect this process waits for."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.query: dict[str, list[str]] | None = None
        self.arrived = threading.Event()


def _handler(callback: _Callback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path != CALLBACK_PATH or query.get("state", [""])[0] != callback.state:
                self._answer(404, "Not the sign-in this Relink command is waiting for.")
                return
            if "error" in query:
                self._answer(400, "The provider refused the sign-in; see the terminal.")
            else:
                self._answer(
                    200, "Signed in. You can close this window and go back to the terminal."
                )
            callback.query = query
            callback.arrived.set()

        def _answer(self, status: int, text: str) -> None:
            body = (
                f"<!doctype html><meta charset=utf-8><title>Relink</title><p>{text}</p>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the query string holds the code: never logged

    return Handler


def _oauth_with_listener(
    form: ReconnectForm,
    actor: str,
    port: int,
    no_wait: bool,
    settings: dict[str, str],
    secrets: dict[str, str],
    replace_account: bool = False,
) -> Reconnected | None:
    relink = app()
    connection_id = form.connection_id
    server: HTTPServer | None = None
    if not no_wait:
        try:  # bind first: a busy port fails before anything is stored
            server = HTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
        except OSError as exc:
            raise fail(
                f"cannot listen on 127.0.0.1:{port} for the OAuth redirect ({exc.strerror}); "
                "choose another --callback-port, or use --no-wait and --code-url"
            ) from None
        port = server.server_address[1]
    redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
    try:
        start = start_oauth(
            relink,
            connection_id,
            actor=actor,
            redirect_uri=redirect_uri,
            settings=settings,
            secrets=secrets,
        )
    except BaseException:
        if server is not None:
            server.server_close()
        raise
    typer.echo(start.url)
    if server is None:
        err_console.print(
            f"Open the URL above and allow access (valid until {_hhmm(start.expires_at)}). "
            "Then finish with: relink reconnect "
            f"{connection_id} --as {actor} --code-url 'URL you were redirected to'",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return None
    callback = _Callback(start.state)
    server.RequestHandlerClass = _handler(callback)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    err_console.print(
        f"Open the URL above and allow access; waiting for the redirect to {redirect_uri} "
        f"until {_hhmm(start.expires_at)} (Ctrl-C stops).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    try:
        timeout = max(0.0, (start.expires_at - utcnow()).total_seconds())
        if not callback.arrived.wait(timeout):
            raise fail("no redirect arrived before the sign-in expired; nothing was changed")
    finally:
        server.shutdown()
        server.server_close()
    query = callback.query or {}
    if "error" in query:
        reason = query.get("error_description", query["error"])[0]
        raise fail(f"the provider refused the sign-in: {query['error'][0]} ({reason})")
    return asyncio.run(
        finish_oauth(
            relink,
            state=start.state,
            code=query.get("code", [""])[0],
            actor=actor,
            connection_id=connection_id,
            replace_account=replace_account,
        )
    )


def web_pages_answer(base_url: str) -> bool:
    """Whether Relink's web pages answer at `base_url` (their sign-in page, within 1 s)."""
    import httpx

    try:
        answer = httpx.get(f"{base_url.rstrip('/')}/login", timeout=1.0)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and 'action="/login"' in answer.text


def _oauth_through_web(
    form: ReconnectForm,
    actor: str,
    no_wait: bool,
    settings: dict[str, str],
    secrets: dict[str, str],
    as_json: bool,
    poll: float = 0.5,
) -> None:
    """The provider sends the browser back to the web pages, which finish the reconnect
    (signed in as `actor`); this waits for the result they record."""
    relink = app()
    base_url = relink.settings.base_url.rstrip("/")
    start = start_oauth(
        relink,
        form.connection_id,
        actor=actor,
        redirect_uri=f"{base_url}{CALLBACK_PATH}",
        settings=settings,
        secrets=secrets,
    )
    typer.echo(start.url)
    until = _hhmm(start.expires_at)
    finish = (
        f"relink reconnect {form.connection_id} --as {actor} --code-url 'URL you were "
        "redirected to'"
    )
    if no_wait:
        err_console.print(
            f"Open the URL above and allow access (valid until {until}). In a browser signed "
            f"in to {base_url} as {actor} the web pages finish the reconnect; otherwise "
            f"finish with: {finish}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    err_console.print(
        f"Open the URL above in a browser signed in to the web pages ({base_url}) as {actor} "
        f"and allow access: the pages finish the reconnect. Waiting until {until} "
        "(Ctrl-C stops).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    while (result := oauth_result(relink, start.state)) is None:
        if utcnow() >= start.expires_at:
            raise fail("no reconnect was finished before the sign-in expired; nothing was changed")
        time.sleep(poll)
    action, details = result
    if as_json:
        print_json({"connection_id": form.connection_id, "result": action, **details})
    elif action == "connection.reconnected":
        console.print(
            f"connection {form.connection_id} ({form.connection!r}) reconnected by {actor} "
            "on the web pages",
            markup=False,
            highlight=False,
        )
    if action != "connection.reconnected":
        raise fail(
            f"the reconnect on the web pages failed: {details.get('outcome')} "
            f"({details.get('code')}); nothing was changed"
        )


def _hhmm(moment: datetime) -> str:
    return f"{moment:%H:%M} UTC"


def _print_reconnected(done: Reconnected, as_json: bool) -> None:
    if as_json:
        print_json(done.as_dict())
        return
    owner = (
        f"Created By is now {done.owner} (was {done.previous_owner})"
        if done.owner != done.previous_owner
        else f"Created By stays {done.owner}"
    )
    changed = f"; changed: {', '.join(done.changed)}" if done.changed else ""
    account = f"; connected as {done.account}" if done.account else ""
    if done.account_replaced:
        account = f"; connected as {done.account} (was {done.account_before})"
    console.print(
        f"connection {done.connection_id} ({done.connection!r}) reconnected by {done.by}; "
        f"{owner}{account}{changed}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if done.refresh is not None:
        _print_refresh(done.refresh)


def _check_only(connection_id: int, actor: str, as_json: bool) -> None:
    report = asyncio.run(run_followup(connection_id, actor, steps=plain_steps(app())))
    checked, refreshed = report.checked, report.refresh
    if as_json:
        print_json({"connection": checked, "refresh": refreshed})
    elif report.verdict is Verdict.WORKS:
        console.print(
            f"connection {connection_id} ({checked['connection']!r}): the stored credentials "
            "work" + ("; the disconnection is closed" if checked["disconnection_closed"] else ""),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        assert refreshed is not None
        _print_refresh(RefreshSummary.from_dicts(refreshed["results"], refreshed["duration_s"]))
    why = checked["message"] or checked["outcome"]
    name = f"connection {connection_id} ({checked['connection']!r})"
    if report.verdict is Verdict.WAITS_FOR_ADMIN:
        raise fail(f"{name} waits for an admin to fix the installation ({why})")
    if report.verdict is Verdict.NOT_CHECKED:
        raise fail(
            f"{name}: the source could not be asked ({why}); not a credentials problem, "
            "Relink keeps checking"
        )
    if report.verdict is Verdict.NEEDS_RECONNECT:
        raise fail(
            f"{name} is still {checked['status']} ({why}); its owner {checked['owner']} "
            f"reconnects it at {checked['reconnect_url']}"
        )


# --- datasets refresh --------------------------------------------------------------------


@handle_errors
def datasets_refresh(
    dataset_ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[DATASET_ID]...", min=1, max=MAX_ID, help="Dataset ids."),
    ] = None,
    connection: Annotated[
        int | None,
        typer.Option("--connection", min=1, max=MAX_ID, help="Every dataset of this connection."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Datasets refreshed at once.")] = 4,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Refresh datasets now, in this process (the refresh-datasets flow without Prefect).
    Exits 1 when a dataset failed, or at once, refreshing nothing, when the --connection
    is broken (the line says how to reconnect it)."""
    if connection is None and not dataset_ids:
        raise fail("give --connection ID or one or more DATASET_IDs")
    if connection is not None and dataset_ids:
        raise fail("give --connection ID or DATASET_IDs, not both")
    relink = app()
    with transaction() as session:
        ids = select_datasets(session, connection_id=connection, dataset_ids=dataset_ids)
        if connection is not None:
            _refuse_broken(session, connection)
    policy = RefreshPolicy(concurrency=concurrency)
    summary = asyncio.run(refresh_many(relink, ids, policy=policy))
    if as_json:
        print_json(summary.as_dict())
    else:
        _print_refresh(summary)
    failed = summary.count(ERROR)
    if failed:
        raise fail(f"{failed} of {len(summary.results)} dataset(s) failed to refresh")


def _refuse_broken(session: Session, connection_id: int) -> None:
    """A broken connection's datasets cannot be refreshed: say why and how to reconnect
    (given by id, such a dataset is skipped among the others)."""
    conn = session.get(Connection, connection_id)
    if conn is None or not is_broken(conn.status, conn.invalid_since):
        return
    since = f" since {conn.invalid_since:%Y-%m-%d %H:%M} UTC" if conn.invalid_since else ""
    raise fail(
        f"connection {conn.id} ({conn.name!r}) is disconnected{since}: its credentials no "
        f"longer work; reconnect it first: relink reconnect {conn.id} --as {conn.owner.email}"
    )


def _print_refresh(summary: RefreshSummary) -> None:
    if not summary.results:
        console.print("no datasets to refresh")
        return
    print_table(
        f"Refreshed {summary.count('ok')} of {len(summary.results)} dataset(s) in "
        f"{summary.duration_s:.1f} s",
        ["id", "dataset", "status", "rows", "columns", "error"],
        [
            (r.dataset_id, r.dataset, r.status, r.row_count, len(r.columns) or None, r.error)
            for r in summary.results
        ],
    )


# --- audit -----------------------------------------------------------------------------


@handle_errors
def audit_trail(
    connection: Annotated[
        int | None,
        typer.Option("--connection", min=1, max=MAX_ID, help="Only events of this connection."),
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option("--as", help="Only what this user may see (their connections' events)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest N events.")] = 200,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """The audit trail: who changed what and when (oldest first). Never holds secrets."""
    with transaction() as session:
        query = (
            sa.select(AuditEvent, User.email)
            .outerjoin(User, User.id == AuditEvent.actor_id)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
        if as_ is not None:
            viewer = viewer_of(get_actor(session, as_))
            if connection is not None:
                get_visible(session, viewer, connection)  # NotFound: no hint it exists
            visible = sa.select(Connection.id).where(visible_filter(viewer))
            account_wide = sa.and_(
                AuditEvent.connection_id.is_(None),
                AuditEvent.account_id == viewer.account_id,
                sa.true() if viewer.role == Role.ADMIN else sa.false(),
            )
            query = query.where(sa.or_(AuditEvent.connection_id.in_(visible), account_wide))
        if connection is not None:
            if as_ is None and session.get(Connection, connection) is None:
                raise fail(f"unknown connection {connection}; see `relink connections list`")
            query = query.where(AuditEvent.connection_id == connection)
        rows = [
            {
                "id": event.id,
                "at": event.at.isoformat(),
                "action": event.action,
                "actor": email,
                "connection_id": event.connection_id,
                "details": event.details,
            }
            for event, email in reversed(session.execute(query).all())
        ]
    if as_json:
        print_json(rows)
        return
    print_table(
        "Audit trail" + (f" of connection {connection}" if connection is not None else ""),
        ["at", "action", "by", "connection", "details"],
        [
            (
                r["at"],
                r["action"],
                r["actor"] or "",
                r["connection_id"] or "",
                ", ".join(f"{k}={v}" for k, v in r["details"].items()),
            )
            for r in rows
        ],
    )

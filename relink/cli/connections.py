"""Commands about connections, their datasets and metrics, and the connector catalog."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import connectors
from relink import connections as svc
from relink.cli._common import (
    WideOpt,
    app,
    console,
    fail,
    handle_errors,
    parse_pairs,
    print_json,
    print_table,
    secrets_from_env,
    transaction,
)
from relink.datasets import add_dataset, add_metric
from relink.directory import get_actor, viewer_of
from relink.domain.words import Mode, Status
from relink.models import MAX_ID
from relink.people import transfer
from relink.timeutil import utcnow

connections_app = typer.Typer(help="Data connections.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets built on a connection.", no_args_is_help=True)
metrics_app = typer.Typer(help="Metrics and the datasets they use.", no_args_is_help=True)
connectors_app = typer.Typer(help="The kinds of source Relink can check.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AsOpt = Annotated[str, typer.Option("--as", help="Act as this user (email).")]


def register(root: typer.Typer) -> None:
    root.add_typer(connections_app, name="connections")
    root.add_typer(datasets_app, name="datasets")
    root.add_typer(metrics_app, name="metrics")
    root.add_typer(connectors_app, name="connectors")


@connections_app.command("add")
@handle_errors
def connections_add(
    type_: Annotated[
        str, typer.Argument(metavar="TYPE", help="Connector type (`relink connectors list`).")
    ],
    name: Annotated[str, typer.Option("--name", help="Name, unique in the account.")],
    owner: Annotated[str, typer.Option("--owner", help="Owner's email ('Created By').")],
    mode: Annotated[
        Mode, typer.Option("--mode", help="warehouse or direct (query).")
    ] = Mode.DIRECT,
    set_: Annotated[
        list[str], typer.Option("--set", help="A non-secret field: key=value (repeatable).")
    ] = [],  # noqa: B006 - typer needs a literal default
    secret: Annotated[
        list[str],
        typer.Option(
            "--secret", help="A secret field to read from a prompt or stdin (repeatable)."
        ),
    ] = [],  # noqa: B006
    secret_env: Annotated[
        list[str],
        typer.Option(
            "--secret-env", help="A secret field from an environment variable: key=ENVVAR."
        ),
    ] = [],  # noqa: B006
) -> None:
    """Add a connection. Secrets never come from the command line itself."""
    secrets = _read_secrets(secret, parse_pairs(secret_env, "--secret-env"))
    new = svc.NewConnection(
        type=type_,
        name=name,
        owner=owner,
        mode=mode,
        settings=parse_pairs(set_, "--set"),
        secrets=secrets,
    )
    relink = app()
    with transaction() as session:
        conn = svc.add_connection(session, relink.vault, new, now=utcnow())
    console.print(f"connection {conn.id} {conn.name!r} ({conn.type}) added", highlight=False)


def _read_secrets(names: list[str], env_refs: dict[str, str]) -> dict[str, str]:
    secrets = secrets_from_env(env_refs)
    interactive = sys.stdin.isatty()
    for key in names:
        if interactive:
            value = typer.prompt(f"{key}", hide_input=True)
        else:
            line = sys.stdin.readline()
            if not line:
                raise fail(f"--secret {key}: no value on stdin (one line per secret, in order)")
            value = line.rstrip("\r\n")
        secrets[key] = value
    return secrets


@connections_app.command("import")
@handle_errors
def connections_import(
    file: Annotated[Path, typer.Argument(help="YAML file; secrets as {env: VARIABLE}.")],
) -> None:
    """Add many connections at once, all or nothing."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{file}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise fail(f"{file}: not UTF-8 text (byte {exc.start + 1}); save it as UTF-8") from None
    items = svc.parse_import(text, os.environ, source=str(file))
    relink = app()
    with transaction() as session:
        created = svc.import_connections(session, relink.vault, items, now=utcnow())
    console.print(f"imported {len(created)} connection(s) from {file}", highlight=False)


@connections_app.command("list")
@handle_errors
def connections_list(
    as_: AsOpt,
    status: Annotated[Status | None, typer.Option("--status", help="Only this status.")] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List the connections this user may see."""
    with transaction() as session:
        viewer = viewer_of(get_actor(session, as_))
        rows, after = [], 0
        while page := svc.list_visible(session, viewer, status=status, after_id=after):
            rows.extend(svc.summary(c) for c in page)
            after = page[-1].id
    if as_json:
        print_json(rows)
        return
    print_table(
        f"Connections visible to {as_}",
        ["id", "name", "type", "mode", "status", "invalid since", "created by", "last checked"],
        [
            (
                r["id"],
                r["name"],
                r["type"],
                r["mode"],
                _status_text(r),
                r["invalid_since"],
                r["created_by"],
                r["last_checked_at"],
            )
            for r in rows
        ],
    )


def _status_text(row: dict[str, Any]) -> str:
    """The status, and for a broken connection the second fact of an outage."""
    also = " (source unreachable now)" if row["broken"] and row["unreachable_now"] else ""
    return f"{row['status']}{also}"


@connections_app.command("show")
@handle_errors
def connections_show(
    connection_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=MAX_ID)],
    as_: AsOpt,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Show one connection with its datasets and metrics and their error state."""
    with transaction() as session:
        viewer = viewer_of(get_actor(session, as_))
        data = svc.detail(session, svc.get_visible(session, viewer, connection_id))
    if as_json:
        print_json(data)
        return
    fields = [
        "id",
        "name",
        "type",
        "mode",
        "status",
        "invalid_since",
        "created_by",
        "connected_as",
        "last_checked_at",
        "last_error_code",
        "last_error_message",
        "credentials_expire_at",
        "credentials_expiry",
        "shared_with",
    ]
    print_table(f"Connection {data['id']}", ["field", "value"], [(f, data[f]) for f in fields])
    print_table("Settings", ["field", "value"], list(data["settings"].items()))
    print_table(
        "Datasets",
        ["id", "name", "status", "rows", "last refreshed", "error"],
        [
            (d["id"], d["name"], d["status"], d["row_count"], d["last_refreshed_at"], d["error"])
            for d in data["datasets"]
        ],
    )
    print_table(
        "Metrics",
        ["id", "name", "datasets", "error"],
        [(m["id"], m["name"], ", ".join(m["datasets"]), m["error"]) for m in data["metrics"]],
    )


@connections_app.command("share")
@handle_errors
def connections_share(
    connection_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=MAX_ID)],
    with_: Annotated[str, typer.Option("--with", help="Email of the user to share with.")],
    as_: AsOpt,
) -> None:
    """Share a connection with a user of the same account (admins and the owner may)."""
    with transaction() as session:
        actor = get_actor(session, as_)
        svc.share(session, connection_id, with_email=with_, actor=actor, now=utcnow())
    console.print(f"connection {connection_id} shared with {with_}", highlight=False)


@connections_app.command("transfer")
@handle_errors
def connections_transfer(
    connection_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=MAX_ID)],
    to: Annotated[str, typer.Option("--to", help="Email of the new owner, in the account.")],
    as_: Annotated[str, typer.Option("--as", help="The admin handing it over (audited).")],
) -> None:
    """Make another user of the account the connection's owner ("Created By"): they get
    its emails from now on. The previous owner keeps seeing it (shared with them) unless
    deactivated. Admins only."""
    with transaction() as session:
        conn = transfer(session, connection_id, to_email=to, actor_email=as_, now=utcnow())
        owner = conn.owner.email
    console.print(f"connection {connection_id} now belongs to {owner}", highlight=False)


@datasets_app.command("add")
@handle_errors
def datasets_add(
    connection: Annotated[
        int, typer.Option("--connection", min=1, max=MAX_ID, help="Connection id.")
    ],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")],
    query: Annotated[str, typer.Option("--query", help="SQL, or an API path for HTTP sources.")],
) -> None:
    """Add a dataset on a connection."""
    with transaction() as session:
        ds = add_dataset(session, connection_id=connection, name=name, query=query, now=utcnow())
    console.print(f"dataset {ds.id} {ds.name!r} added", highlight=False)


@metrics_app.command("add")
@handle_errors
def metrics_add(
    name: Annotated[str, typer.Option("--name", help="Metric name.")],
    dataset: Annotated[
        list[int],
        typer.Option("--dataset", min=1, max=MAX_ID, help="Dataset id (repeatable)."),
    ],
) -> None:
    """Add a metric over one or more datasets."""
    with transaction() as session:
        metric = add_metric(session, name=name, dataset_ids=dataset, now=utcnow())
    console.print(f"metric {metric.id} {metric.name!r} added", highlight=False)


@connectors_app.command("list")
@handle_errors
def connectors_list(as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """List connector types."""
    rows = [c.describe() for c in connectors.all_connectors()]
    if as_json:
        print_json(rows)
        return
    print_table(
        "Connectors",
        ["type", "name", "auth", "required fields"],
        [
            (
                r["type"],
                r["display_name"],
                r["auth_kind"],
                ", ".join(f["name"] for f in r["fields"] if f["required"]),
            )
            for r in rows
        ],
    )


@connectors_app.command("show")
@handle_errors
def connectors_show(
    type_: Annotated[str, typer.Argument(metavar="TYPE")],
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Show a connector's connection requirements."""
    try:
        info = connectors.get(type_).describe()
    except connectors.UnknownConnector as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(info)
        return
    print_table(
        f"{info['display_name']} ({info['type']}, {info['auth_kind']}) — connection requirements",
        ["field", "label", "secret", "required", "reconnect", "default", "help"],
        [
            (
                f["name"],
                f["label"],
                "yes" if f["secret"] else "",
                "yes" if f["required"] else "",
                "yes" if f["reconnect"] else "",
                f["default"],
                f["help"],
            )
            for f in info["fields"]
        ],
    )

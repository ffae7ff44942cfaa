"""Commands that set Relink up: db, config, keys, accounts, users."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
import typer

from relink import audit, db
from relink.cli._common import (
    WideOpt,
    app,
    console,
    fail,
    handle_errors,
    print_json,
    print_table,
    transaction,
)
from relink.directory import add_account, add_user, get_account
from relink.models import Account, Connection, OAuthState, Role, User
from relink.people import deactivate, reactivate
from relink.timeutil import utcnow
from relink.vault import Vault, generate_key, prepend_key_file

db_app = typer.Typer(help="The app database: migrations.", no_args_is_help=True)
config_app = typer.Typer(help="Effective settings.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys of the credential vault.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts (organisations).", no_args_is_help=True)
users_app = typer.Typer(help="Users of an account.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(root: typer.Typer) -> None:
    root.add_typer(db_app, name="db")
    root.add_typer(config_app, name="config")
    root.add_typer(keys_app, name="keys")
    root.add_typer(accounts_app, name="accounts")
    root.add_typer(users_app, name="users")


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the app database to the newest schema."""
    relink = app()
    db.upgrade(relink.engine, revision)
    console.print(f"database at {db.current_revision(relink.engine)}", highlight=False)


@db_app.command("downgrade")
@handle_errors
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target, e.g. base.")]) -> None:
    """Migrate the app database down to REVISION (`base` drops every table)."""
    relink = app()
    db.downgrade(relink.engine, revision)
    console.print(f"database at {db.current_revision(relink.engine) or 'base'}", highlight=False)


@config_app.command("show")
@handle_errors
def config_show(as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Print the effective settings, secrets masked."""
    values = app().settings.masked()
    if as_json:
        print_json(values)
        return
    rows = [(k, v) for k, v in values.items()]
    print_table("Settings (RELINK_*)", ["setting", "value"], rows)


@keys_app.command("generate")
@handle_errors
def keys_generate() -> None:
    """Print a new Fernet key (to put first in RELINK_SECRET_KEYS)."""
    typer.echo(generate_key())


@keys_app.command("rotate")
@handle_errors
def keys_rotate() -> None:
    """Re-encrypt every connection's credentials under the newest key, in one transaction.

    Pending OAuth sign-ins (their PKCE verifiers) are re-encrypted too: once this
    succeeds, nothing still read needs the older keys. With RELINK_SECRET_KEYS, the
    newest key is the first one listed. With the key file of the embedded default, a
    new key is generated and put first.
    """
    relink = app()
    relink.ensure_schema()
    settings = relink.settings
    if not settings.secret_keys.get_secret_value().strip():
        Vault.from_settings(settings)  # make sure the key file exists
        prepend_key_file(settings.key_file, generate_key())
        relink.__dict__.pop("vault", None)
    vault = relink.vault
    now = utcnow()
    with relink.transaction() as session:
        count = 0
        for conn in session.scalars(sa.select(Connection).order_by(Connection.id)):
            conn.credentials = vault.rotate(conn.credentials, connection=_label(conn))
            count += 1
        for state in session.scalars(_pending_sign_ins(now)):
            label = f"{state.connection_id} (a pending OAuth sign-in)"
            state.code_verifier = vault.rotate(state.code_verifier, connection=label)
        audit.record(session, "keys.rotated", at=now, connections=count)
    console.print(f"re-encrypted the credentials of {count} connection(s) under the newest key")


def _label(conn: Connection) -> str:
    return f"{conn.id} ({conn.name!r})"


def _pending_sign_ins(now: datetime) -> sa.Select[tuple[OAuthState]]:
    """OAuth sign-ins that may still finish; used or expired ones are never decrypted
    again (and are purged a day later), whatever key they were written under."""
    return (
        sa.select(OAuthState)
        .where(OAuthState.used_at.is_(None), OAuthState.expires_at > now)
        .order_by(OAuthState.id)
    )


@accounts_app.command("add")
@handle_errors
def accounts_add(name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Create an account."""
    with transaction() as session:
        account = add_account(session, name, now=utcnow())
    console.print(f"account {account.id} {account.name!r} created", highlight=False)


@accounts_app.command("list")
@handle_errors
def accounts_list(as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """List accounts."""
    with transaction() as session:
        rows = [
            {"id": a.id, "name": a.name, "expiry_heads_up": a.expiry_heads_up}
            for a in session.scalars(sa.select(Account))
        ]
    if as_json:
        print_json(rows)
    else:
        print_table(
            "Accounts",
            ["id", "name", "expiry heads-up"],
            [(r["id"], r["name"], "on" if r["expiry_heads_up"] else "off") for r in rows],
        )


@accounts_app.command("set")
@handle_errors
def accounts_set(
    name: Annotated[str, typer.Argument(help="Account name.")],
    expiry_heads_up: Annotated[
        bool | None,
        typer.Option(
            "--expiry-heads-up/--no-expiry-heads-up",
            help="Email owners once, RELINK_HEADS_UP_DAYS before their connections' "
            "credentials expire for good (on by default).",
        ),
    ] = None,
) -> None:
    """Change an account's settings."""
    if expiry_heads_up is None:
        raise fail("nothing to change: add --expiry-heads-up or --no-expiry-heads-up")
    with transaction() as session:
        account = get_account(session, name)
        before = account.expiry_heads_up
        account.expiry_heads_up = expiry_heads_up
        if before != expiry_heads_up:
            audit.record(
                session,
                "account.changed",
                at=utcnow(),
                account_id=account.id,
                expiry_heads_up=expiry_heads_up,
            )
    console.print(
        f"account {name!r}: expiry heads-up emails {'on' if expiry_heads_up else 'off'}",
        highlight=False,
    )


@users_app.command("add")
@handle_errors
def users_add(
    email: Annotated[str, typer.Argument(help="Email address (their sign-in).")],
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    account: Annotated[str, typer.Option("--account", help="Account name.")],
    role: Annotated[Role, typer.Option("--role", help="admin or member.")] = Role.MEMBER,
) -> None:
    """Add a user to an account."""
    with transaction() as session:
        user = add_user(session, email=email, name=name, role=role, account=account, now=utcnow())
    console.print(f"user {user.id} {user.email} ({user.role}) added", highlight=False)


@users_app.command("list")
@handle_errors
def users_list(
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List users."""
    with transaction() as session:
        query = sa.select(User, Account.name).join(Account).order_by(User.id)
        if account:
            query = query.where(User.account_id == get_account(session, account).id)
        rows = [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "role": u.role,
                "active": u.active,
                "account": acc,
            }
            for u, acc in session.execute(query)
        ]
    if as_json:
        print_json(rows)
    else:
        print_table("Users", list(rows[0]) if rows else ["id"], [list(r.values()) for r in rows])


@users_app.command("deactivate")
@handle_errors
def users_deactivate(email: Annotated[str, typer.Argument(help="The user who left.")]) -> None:
    """The user can no longer sign in (web pages, `--as`). Their connections stay checked;
    their disconnection emails go to the account's admins until someone reconnects the
    connection or an admin transfers it (`relink connections transfer`). Refused for the
    last active admin of an account."""
    with transaction() as session:
        user = deactivate(session, email, now=utcnow())
    console.print(
        f"user {user.email} deactivated: cannot sign in; their connections' emails go to "
        "the account's admins",
        highlight=False,
    )


@users_app.command("reactivate")
@handle_errors
def users_reactivate(email: Annotated[str, typer.Argument(help="A deactivated user.")]) -> None:
    """The user can sign in again and sees what they saw before."""
    with transaction() as session:
        user = reactivate(session, email, now=utcnow())
    console.print(f"user {user.email} reactivated", highlight=False)

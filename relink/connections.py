"""Connections: add, import, list and show what a user may see, share; and the SQL form of
what "broken" means and which filter a connection is listed under (relink/domain/broken.py
is the rule; a property test keeps the two in step)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session, selectinload

import connectors
from relink import audit
from relink.directory import get_user, viewer_of
from relink.domain.access import ConnectionRef, Viewer, can_share
from relink.domain.broken import is_broken, listed_under, unreachable_now
from relink.domain.expiry import (
    HEADS_UP_AHEAD,
    UNKNOWN,
    Expiry,
    ExpiryKind,
    days_left,
    describe,
    shown_soon,
)
from relink.domain.health import dataset_error, metric_error
from relink.domain.words import Mode, Status
from relink.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from relink.models import Connection, ConnectionShare, Dataset, Role, User
from relink.names import limit_of, one_line
from relink.timeutil import utcnow
from relink.vault import Vault


@dataclass
class NewConnection:
    type: str
    name: str
    owner: str  # email
    mode: str = Mode.DIRECT
    settings: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


def check_fields(
    connector: connectors.Connector, settings: Mapping[str, Any], secrets: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Settings with defaults filled in, and secrets; InvalidInput names what is wrong."""
    known = ", ".join(f.name for f in connector.fields)
    for name in settings:
        spec = connector.field(name)
        if spec is None:
            raise InvalidInput(f"unknown field {name!r} for {connector.type} (fields: {known})")
        if spec.secret:
            raise InvalidInput(
                f"{name!r} is a secret of {connector.type}: pass it with --secret {name} "
                f"(prompt or stdin) or --secret-env {name}=ENVVAR, never on the command line"
            )
    for name in secrets:
        spec = connector.field(name)
        if spec is None:
            raise InvalidInput(f"unknown field {name!r} for {connector.type} (fields: {known})")
        if not spec.secret:
            raise InvalidInput(f"{name!r} is not a secret of {connector.type}: use --set {name}=…")
    clean_settings = {k: str(v).strip() for k, v in settings.items()}
    for spec in connector.fields:
        if spec.secret:
            if spec.required and not secrets.get(spec.name):
                raise InvalidInput(
                    f"missing secret {spec.name!r} for {connector.type}: "
                    f"add --secret {spec.name} or --secret-env {spec.name}=ENVVAR"
                )
        elif not clean_settings.get(spec.name):
            if spec.default is not None:
                clean_settings[spec.name] = spec.default
            elif spec.required:
                raise InvalidInput(
                    f"missing field {spec.name!r} for {connector.type}: add --set {spec.name}=…"
                )
    return clean_settings, {k: v for k, v in secrets.items() if v}


def add_connection(
    session: Session, vault: Vault, new: NewConnection, *, now: datetime, actor: User | None = None
) -> Connection:
    try:
        connector = connectors.get(new.type)
    except connectors.UnknownConnector as exc:
        raise InvalidInput(str(exc)) from None
    if new.mode not in set(Mode):
        raise InvalidInput(f"unknown mode {new.mode!r}; use warehouse or direct")
    name = one_line(new.name, "a connection name", limit_of(Connection.name))
    if not name:
        raise InvalidInput("a connection needs a name (--name)")
    settings, secrets = check_fields(connector, new.settings, new.secrets)
    problem = connector.settings_problem(settings)
    if problem:
        raise InvalidInput(f"{connector.type}: {problem}")
    owner = get_user(session, new.owner)
    taken = sa.select(Connection.id).where(
        Connection.account_id == owner.account_id, Connection.name == name
    )
    if session.scalar(taken) is not None:
        raise Conflict(f"a connection named {name!r} already exists in this account")
    conn = Connection(
        account_id=owner.account_id,
        type=connector.type,
        name=name,
        mode=new.mode,
        settings=settings,
        credentials=vault.encrypt(secrets),
        owner_id=owner.id,
        status=Status.UNCHECKED,
        created_at=now,
        updated_at=now,
    )
    note_expiry(conn, secrets, now=now)
    session.add(conn)
    session.flush()
    audit.record(
        session,
        "connection.created",
        at=now,
        connection=conn,
        actor=actor or owner,
        type=connector.type,
        name=name,
        mode=new.mode,
        owner=owner.email,
    )
    return conn


def note_expiry(conn: Connection, credentials: Mapping[str, str], *, now: datetime) -> None:
    """Record when credentials just stored (granted at `now`) expire on their own:
    relink.domain.expiry through the connector, unknown for a type it does not know."""
    try:
        connector = connectors.get(conn.type)
    except connectors.UnknownConnector:
        expiry = UNKNOWN
    else:
        expiry = connector.credentials_expiry(conn.settings or {}, credentials, now=now)
    conn.credentials_expire_at = expiry.at
    conn.credentials_expiry_kind = expiry.kind and str(expiry.kind)


# --- import files ---------------------------------------------------------------------


class _EnvRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: str


class _ImportedConnection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    name: str
    owner: str
    mode: str = Mode.DIRECT
    settings: dict[str, str | int | bool] = {}
    secrets: dict[str, _EnvRef] = {}


class _ImportFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connections: list[_ImportedConnection]


def parse_import(text: str, env: Mapping[str, str], *, source: str) -> list[NewConnection]:
    """Connections from an import file; secrets are env-var references, resolved here."""
    import yaml  # only imports need it: not every command's start-up

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise InvalidInput(f"{source}: not valid YAML{line}; fix the file and run again") from None
    try:
        parsed = _ImportFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(_key_text(p) for p in first["loc"])
        hint = " (secrets must be written as {env: VARIABLE})" if "secrets" in path else ""
        raise InvalidInput(f"{source}: {path}: {first['msg']}{hint}") from None
    result = []
    for index, item in enumerate(parsed.connections):
        secrets = {}
        for key, ref in item.secrets.items():
            if ref.env not in env:
                raise InvalidInput(
                    f"{source}: connection {index + 1} ({item.name!r}): secret {key!r} refers "
                    f"to environment variable {ref.env}, which is not set"
                )
            secrets[key] = env[ref.env]
        result.append(
            NewConnection(
                type=item.type,
                name=item.name,
                owner=item.owner,
                mode=item.mode,
                settings={k: str(v) for k, v in item.settings.items()},
                secrets=secrets,
            )
        )
    return result


def _key_text(key: int | str) -> str:
    """A key of the file as the message shows it: quoted unless a plain name (it may hold
    a line break, which would split the one-line error)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def import_connections(
    session: Session, vault: Vault, items: Sequence[NewConnection], *, now: datetime
) -> list[Connection]:
    """All or nothing: the caller's transaction rolls back on the first bad entry."""
    created = []
    for index, item in enumerate(items):
        try:
            created.append(add_connection(session, vault, item, now=now))
        except (InvalidInput, Conflict, NotFound) as exc:
            raise type(exc)(f"connection {index + 1} ({item.name!r}): {exc}") from None
    return created


# --- broken, in SQL -----------------------------------------------------------------


def broken_clause() -> sa.ColumnElement[bool]:
    """The SQL form of `domain.broken.is_broken`."""
    return sa.or_(Connection.status == Status.DISCONNECTED, Connection.invalid_since.is_not(None))


def listed_under_clause(status: str) -> sa.ColumnElement[bool]:
    """The connections `domain.broken.listed_under` puts under `status` (a filter)."""
    if status == Status.DISCONNECTED:
        return broken_clause()
    return sa.and_(Connection.status == status, sa.not_(broken_clause()))


def listed_as() -> sa.ColumnElement[str]:
    """`domain.broken.listed_under` as a column: what the filters count."""
    return sa.case((broken_clause(), sa.literal(str(Status.DISCONNECTED))), else_=Connection.status)


def listed_counts(session: Session, where: sa.ColumnElement[bool]) -> dict[str, int]:
    """How many connections (of those `where` selects) each filter lists, every status
    named."""
    shown = listed_as().label("shown")
    rows = session.execute(sa.select(shown, sa.func.count()).where(where).group_by(shown))
    counts = {str(s): 0 for s in Status}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


# --- what a user may see ------------------------------------------------------------


def visible_filter(viewer: Viewer) -> sa.ColumnElement[bool]:
    """The SQL form of `access.can_view` (a test keeps the two in step)."""
    if not viewer.active:
        return sa.false()
    same_account = Connection.account_id == viewer.account_id
    if viewer.role == Role.ADMIN:
        return same_account
    shared = sa.select(ConnectionShare.connection_id).where(ConnectionShare.user_id == viewer.id)
    return sa.and_(
        same_account, sa.or_(Connection.owner_id == viewer.id, Connection.id.in_(shared))
    )


def list_visible(
    session: Session,
    viewer: Viewer,
    *,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 500,
) -> list[Connection]:
    """One page of visible connections by id (keyset pagination: pass the last id seen)."""
    if status is not None and status not in set(Status):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(Status)}")
    query = (
        sa.select(Connection)
        .where(visible_filter(viewer), Connection.id > after_id)
        .options(selectinload(Connection.owner))
        .order_by(Connection.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(listed_under_clause(status))
    return list(session.scalars(query))


def get_visible(session: Session, viewer: Viewer, connection_id: int) -> Connection:
    """The connection, or NotFound whether it is missing or hidden (no hint it exists)."""
    conn = session.scalar(
        sa.select(Connection).where(Connection.id == connection_id, visible_filter(viewer))
    )
    if conn is None:
        raise NotFound(f"no connection {connection_id} visible to you")
    return conn


def ref_of(conn: Connection) -> ConnectionRef:
    return ConnectionRef(
        account_id=conn.account_id,
        owner_id=conn.owner_id,
        shared_with=frozenset(s.user_id for s in conn.shares),
    )


def share(
    session: Session, connection_id: int, *, with_email: str, actor: User, now: datetime
) -> ConnectionShare:
    viewer = viewer_of(actor)
    conn = get_visible(session, viewer, connection_id)
    if not can_share(viewer, ref_of(conn)):
        raise PermissionDenied(
            f"only an admin or the owner may share connection {conn.id} ({conn.name!r})"
        )
    target = get_user(session, with_email)
    if target.account_id != conn.account_id:
        raise InvalidInput(f"{target.email} belongs to another account; share within yours")
    if target.id == conn.owner_id or any(s.user_id == target.id for s in conn.shares):
        raise Conflict(f"{target.email} already has access to connection {conn.id}")
    link = ConnectionShare(connection_id=conn.id, user_id=target.id)
    conn.shares.append(link)
    audit.record(
        session, "connection.shared", at=now, connection=conn, actor=actor, shared_with=target.email
    )
    return link


# --- views for the CLI, the JSON API and the pages ---------------------------------------


def expiry_of(conn: Connection) -> Expiry:
    kind = conn.credentials_expiry_kind
    return Expiry(conn.credentials_expire_at, ExpiryKind(kind) if kind else None)


def expiry_view(
    conn: Connection, now: datetime, ahead: timedelta = HEADS_UP_AHEAD
) -> dict[str, Any]:
    """When the credentials expire, as the pages, the CLI and the JSON say it: the time
    (null: unknown), hard or idle, whole days left, the words, and whether it is soon
    enough to show a badge (a hard end within the heads-up window)."""
    expiry = expiry_of(conn)
    return {
        "credentials_expire_at": _iso(expiry.at),
        "credentials_expiry_kind": expiry.kind and str(expiry.kind),
        "credentials_expire_in_days": days_left(expiry, now),
        "credentials_expiry": describe(expiry, now),
        "expires_soon": shown_soon(expiry, now, ahead),
    }


def summary(
    conn: Connection, *, now: datetime | None = None, ahead: timedelta = HEADS_UP_AHEAD
) -> dict[str, Any]:
    return {
        "id": conn.id,
        "name": conn.name,
        "type": conn.type,
        "mode": conn.mode,
        "status": str(listed_under(conn.status, conn.invalid_since)),
        "broken": is_broken(conn.status, conn.invalid_since),
        "last_outcome": conn.last_outcome,
        "last_outcome_code": conn.last_outcome_code,
        "unreachable_now": unreachable_now(conn.last_outcome),
        "created_by": conn.owner.name,
        "created_by_email": conn.owner.email,
        "connected_as": conn.identity_label,
        "connected_as_subject": conn.identity_subject,
        "invalid_since": _iso(conn.invalid_since),
        "last_checked_at": _iso(conn.last_checked_at),
        "last_error_code": conn.last_error_code,
        "last_error_message": conn.last_error_message,
        **expiry_view(conn, now or utcnow(), ahead),
    }


def detail(
    session: Session,
    conn: Connection,
    *,
    now: datetime | None = None,
    ahead: timedelta = HEADS_UP_AHEAD,
) -> dict[str, Any]:
    """Everything `connections show` prints: the connection, its datasets and metrics."""
    datasets = list(
        session.scalars(
            sa.select(Dataset)
            .where(Dataset.connection_id == conn.id)
            .options(selectinload(Dataset.metrics))
            .order_by(Dataset.id)
        )
    )
    errors = {ds.id: _dataset_error(conn, ds) for ds in datasets}
    metrics: dict[int, dict[str, Any]] = {}
    for ds in datasets:
        for metric in ds.metrics:
            metrics.setdefault(metric.id, {"metric": metric, "datasets": metric.datasets})
    metric_rows = []
    for entry in metrics.values():
        metric = entry["metric"]
        metric_rows.append(
            {
                "id": metric.id,
                "name": metric.name,
                "datasets": [d.name for d in entry["datasets"]],
                "error": metric_error(_dataset_error(d.connection, d) for d in entry["datasets"]),
            }
        )
    return {
        **summary(conn, now=now, ahead=ahead),
        "settings": dict(conn.settings),
        "shared_with": sorted(s.user.email for s in conn.shares),
        "datasets": [
            {
                "id": ds.id,
                "name": ds.name,
                "query": ds.query,
                "status": ds.status,
                "last_refreshed_at": _iso(ds.last_refreshed_at),
                "row_count": ds.row_count,
                "error": errors[ds.id],
            }
            for ds in datasets
        ],
        "metrics": metric_rows,
    }


def _dataset_error(conn: Connection, ds: Dataset) -> str | None:
    return dataset_error(
        dataset_status=ds.status,
        dataset_error=ds.last_error,
        connection_name=conn.name,
        connection_status=conn.status,
        connection_error=conn.last_error_message,
        connection_invalid_since=conn.invalid_since,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None

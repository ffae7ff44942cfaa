"""The app database: SQLAlchemy 2 typed declarative models.

Status columns hold plain strings checked by CHECK constraints, so the same
schema runs on SQLite, PostgreSQL and MySQL. Times are stored as UTC.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from relink.domain.expiry import ExpiryKind
from relink.domain.identity import Identity
from relink.domain.identity import identity as make_identity
from relink.domain.words import (  # the words of these columns
    DatasetStatus,
    Mode,
    NotificationState,
    Role,
    Status,
)
from relink.timeutil import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def _check_in(column: str, enum: type[StrEnum]) -> sa.CheckConstraint:
    values = ", ".join(f"'{v.value}'" for v in enum)
    return sa.CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Every id is a positive 64-bit integer; a larger number names no row, and SQLite cannot
# even be asked about it (OverflowError), so the CLI and the web refuse it up front.
MAX_ID = 2**63 - 1


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime]
    # owners get a heads-up email before their connections' credentials expire
    expiry_heads_up: Mapped[bool] = mapped_column(default=True, server_default=sa.true())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (_check_in("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16), default=Role.MEMBER)
    active: Mapped[bool] = mapped_column(default=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    created_at: Mapped[datetime]

    account: Mapped[Account] = relationship()


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "name"),
        sa.Index("ix_connections_account_status", "account_id", "status"),
        _check_in("mode", Mode),
        _check_in("status", Status),
        _check_in("credentials_expiry_kind", ExpiryKind),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    mode: Mapped[str] = mapped_column(sa.String(16), default=Mode.DIRECT)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credentials: Mapped[str] = mapped_column(sa.Text)  # MultiFernet ciphertext of a JSON object
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=Status.UNCHECKED)
    invalid_since: Mapped[datetime | None] = mapped_column(default=None)
    last_checked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error_code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    last_error_message: Mapped[str | None] = mapped_column(sa.String(1000), default=None)
    # what the last check found (an outcome, or "error": not checkable), whatever the
    # status shows: a broken connection stays disconnected through an outage
    last_outcome: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    last_outcome_code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    # when the credentials stop working on their own (relink.domain.expiry), both None
    # when unknown; written whenever credentials are stored or refreshed
    credentials_expire_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    credentials_expiry_kind: Mapped[str | None] = mapped_column(sa.String(8), default=None)
    # whose account the credentials use, as the source told it (relink.domain.identity)
    identity_subject: Mapped[str | None] = mapped_column(sa.String(500), default=None)
    identity_label: Mapped[str | None] = mapped_column(sa.String(320), default=None)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __mapper_args__ = {"version_id_col": version}

    owner: Mapped[User] = relationship()
    account: Mapped[Account] = relationship()
    shares: Mapped[list[ConnectionShare]] = relationship(
        back_populates="connection", cascade="all, delete-orphan"
    )
    datasets: Mapped[list[Dataset]] = relationship(
        back_populates="connection", order_by="Dataset.id", cascade="all, delete-orphan"
    )

    @property
    def identity(self) -> Identity | None:
        return make_identity(self.identity_subject, self.identity_label)

    @identity.setter
    def identity(self, value: Identity | None) -> None:
        self.identity_subject = value.subject if value else None
        self.identity_label = value.label if value else None


class ConnectionShare(Base):
    __tablename__ = "connection_shares"

    connection_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    connection: Mapped[Connection] = relationship(back_populates="shares")
    user: Mapped[User] = relationship()


metric_datasets = sa.Table(
    "metric_datasets",
    Base.metadata,
    sa.Column("metric_id", sa.ForeignKey("metrics.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "dataset_id", sa.ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "name"),
        _check_in("status", DatasetStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    query: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=DatasetStatus.PENDING)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(default=None)
    row_count: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(sa.String(1000), default=None)
    # the result's shape at the last successful refresh (column names as stored)
    columns: Mapped[list[str] | None] = mapped_column(sa.JSON, default=None)

    connection: Mapped[Connection] = relationship(back_populates="datasets")
    metrics: Mapped[list[Metric]] = relationship(
        secondary=metric_datasets, back_populates="datasets", order_by="Metric.id"
    )


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (sa.UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(sa.String(200))

    datasets: Mapped[list[Dataset]] = relationship(
        secondary=metric_datasets, back_populates="metrics", order_by="Dataset.id"
    )


class Disconnection(Base):
    """One episode of broken credentials: opened by the first auth failure, closed by recovery."""

    __tablename__ = "disconnections"
    __table_args__ = (
        # open episodes by start time
        sa.Index(
            "ix_disconnections_open_started",
            "started_at",
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        ),
        # the email rule's due query (relink.emailing.due.due_query): only the open
        # episodes still waiting for their email. Each predicate is written as that
        # dialect renders `Disconnection.awaiting_email` in the query (SQLite uses a
        # partial index only when the query's WHERE repeats the index's terms). The id
        # is included so that PostgreSQL answers from the index alone (SQLite's indexes
        # carry the rowid anyway).
        sa.Index(
            "ix_disconnections_due",
            "started_at",
            postgresql_where=sa.text("ended_at IS NULL AND awaiting_email"),
            postgresql_include=["id"],
            sqlite_where=sa.text("ended_at IS NULL AND awaiting_email = 1"),
        ),
        # at most one open episode per connection
        sa.Index(
            "uq_disconnections_one_open",
            "connection_id",
            unique=True,
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        ),
        sa.Index("ix_disconnections_connection", "connection_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    reason_code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    # True while the email is still to send: no notification, or only a `released` one
    # (relink.domain.due.awaiting_email). A copy of the notification's state for
    # ix_disconnections_due, written by relink.emailing.ledger in the same transaction
    # as every notification change; the notification row, not this flag, decides who sends
    # the email.
    awaiting_email: Mapped[bool] = mapped_column(default=True, server_default=sa.true())

    connection: Mapped[Connection] = relationship()
    notification: Mapped[Notification | None] = relationship(back_populates="disconnection")


class Notification(Base):
    """The one email of a disconnection: the unique constraint is the 'once, ever' rule."""

    __tablename__ = "notifications"
    __table_args__ = (_check_in("state", NotificationState),)

    id: Mapped[int] = mapped_column(primary_key=True)
    disconnection_id: Mapped[int] = mapped_column(
        sa.ForeignKey("disconnections.id", ondelete="CASCADE"), unique=True
    )
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    recipients: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    attempts: Mapped[int] = mapped_column(default=0)
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    last_error: Mapped[str | None] = mapped_column(sa.String(1000), default=None)
    subject: Mapped[str | None] = mapped_column(sa.String(500), default=None)
    claimed_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime]

    disconnection: Mapped[Disconnection] = relationship(back_populates="notification")


class HeadsUp(Base):
    """The one heads-up email of a connection's hard expiry (relink.emailing.headsup): the
    unique constraint is the 'once per expiry' rule; its states are a notification's."""

    __tablename__ = "heads_ups"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "expires_at"),
        _check_in("state", NotificationState),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    recipients: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    attempts: Mapped[int] = mapped_column(default=0)
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    last_error: Mapped[str | None] = mapped_column(sa.String(1000), default=None)
    subject: Mapped[str | None] = mapped_column(sa.String(500), default=None)
    claimed_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime]

    connection: Mapped[Connection] = relationship()


class AuditEvent(Base):
    """Who did what to which connection, and when. Details never hold secrets."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_connection_at", "connection_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("accounts.id"), default=None)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), default=None)
    connection_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="CASCADE"), default=None
    )
    action: Mapped[str] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    actor: Mapped[User | None] = relationship()


class OAuthState(Base):
    """A pending OAuth reconnect: bound to a connection and the user who started it; or a
    validated reconnect of another account waiting for that user's confirmation
    (`relink.reconnecting.confirm`: its token's hash, the held credentials encrypted).

    Only a SHA-256 of the `state` value is stored; the PKCE code_verifier, and the
    changes the reconnect proposes (settings, a new client secret), are encrypted with
    the vault in `code_verifier`. Single use: `used_at` is set by a conditional UPDATE.
    """

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    connection_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    code_verifier: Mapped[str] = mapped_column(sa.Text)  # vault ciphertext (see above)
    redirect_uri: Mapped[str] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class Followup(Base):
    """A reconnect's follow-up asked for by the web pages (re-check, then refresh the
    datasets): written before it starts, so one the web process did not finish is resumed
    when it starts again. `flow_run_id`: a reconnect-connection flow run took it over."""

    __tablename__ = "followups"

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        sa.ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    requested_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    flow_run_id: Mapped[str | None] = mapped_column(sa.String(36), default=None)
    verdict: Mapped[str | None] = mapped_column(sa.String(32), default=None)


class SweepShard(Base):
    """One id range of a fanned-out check sweep, claimed by the one run that checks it.

    Rows are written by the sweep (`check-connections`) before it starts the shard runs;
    a shard run claims its row with a conditional UPDATE (`claimed_by IS NULL`), so a
    shard run that finds its shard already claimed exits without checking.
    """

    __tablename__ = "sweep_shards"
    __table_args__ = (sa.UniqueConstraint("sweep_id", "shard"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    shard: Mapped[int]
    after_id: Mapped[int]  # the shard holds after_id < connection id <= upto_id
    upto_id: Mapped[int | None] = mapped_column(default=None)  # None: no upper bound
    created_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    summary: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, default=None)


class ProviderIncident(Base):
    """Most connections of one provider failing alike in a sweep (`relink.sweep.incidents`):
    opened by the first sweep that finds it, updated by the next ones, ended by the first
    sweep that checks enough of the provider's connections and finds no incident."""

    __tablename__ = "provider_incidents"
    __table_args__ = (sa.Index("ix_provider_incidents_provider_ended", "provider", "ended_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(64))
    outcome: Mapped[str] = mapped_column(sa.String(16))  # what the failing checks found
    code: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    failed: Mapped[int]  # in the last sweep that found it
    checked: Mapped[int]
    started_at: Mapped[datetime]  # the first sweep's time
    updated_at: Mapped[datetime]  # the last sweep's time that found it
    ended_at: Mapped[datetime | None] = mapped_column(default=None)

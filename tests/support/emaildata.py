"""Builders for the disconnection-email tests: an account with an admin and an owner,
connections that broke at given times, readers of what the run recorded, and checks
that the due index's flag (`awaiting_email`) is in step with the notifications."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from relink.app import Relink
from relink.directory import add_account, add_user
from relink.domain.due import NOT_YET, awaiting_email, cutoff
from relink.emailing.due import due_ids
from relink.emailing.ledger import not_notified
from relink.models import Connection, Disconnection, Notification, Role

# The daily run: 07:00 MST = 14:00 UTC.
RUN = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
SECRET = "pw-marker-9c41e7"  # a credential: must never appear in an email
API_KEY = "SG.test-key-marker-77aa"
OWNER = "bob@acme.test"
ADMIN = "ann@acme.test"


class World:
    """One account (Acme): admin ann, members bob (owner of everything) and cid."""

    def __init__(self, app: Relink) -> None:
        self.app = app
        self._n = 0
        with app.transaction() as session:
            add_account(session, "Acme", now=RUN - timedelta(days=30))
            for email, name, role in (
                (ADMIN, "Ann Admin", Role.ADMIN),
                (OWNER, "Bob Owner", Role.MEMBER),
                ("cid@acme.test", "Cid", Role.MEMBER),
            ):
                add_user(
                    session,
                    email=email,
                    name=name,
                    role=role,
                    account="Acme",
                    now=RUN - timedelta(days=30),
                )

    def user_id(self, email: str) -> int:
        with self.app.sessions() as session:
            from relink.models import User

            return session.scalar(sa.select(User.id).where(User.email == email))

    def connection(
        self,
        name: str | None = None,
        *,
        owner: str = OWNER,
        type_: str = "postgres",
        error: str = 'password authentication failed for user "report"',
        code: str = "28P01",
        secret: str = SECRET,
    ) -> int:
        self._n += 1
        owner_id = self.user_id(owner)
        with self.app.transaction() as session:
            conn = Connection(
                account_id=1,
                type=type_,
                name=name or f"Warehouse {self._n}",
                mode="direct",
                settings={
                    "host": "db.acme.test",
                    "port": "5432",
                    "database": "sales",
                    "username": "report",
                },
                credentials=self.app.vault.encrypt({"password": secret}),
                owner_id=owner_id,
                status="disconnected",
                last_error_code=code,
                last_error_message=error,
                created_at=RUN - timedelta(days=30),
                updated_at=RUN - timedelta(days=30),
            )
            session.add(conn)
            session.flush()
            return conn.id

    def disconnection(
        self, connection_id: int, started_at: datetime, ended_at: datetime | None = None
    ) -> int:
        with self.app.transaction() as session:
            episode = Disconnection(
                connection_id=connection_id,
                started_at=started_at,
                ended_at=ended_at,
                reason_code="28P01",
            )
            session.add(episode)
            session.flush()
            return episode.id

    def broken(self, started_at: datetime, **connection: Any) -> int:
        """A connection that broke at `started_at` and is still broken: its episode id."""
        return self.disconnection(self.connection(**connection), started_at)

    def many_broken(self, count: int, started_at: datetime) -> list[int]:
        """`count` broken connections, inserted in bulk (for concurrency tests)."""
        owner_id = self.user_id(OWNER)
        cipher = self.app.vault.encrypt({"password": SECRET})
        start = self._n
        self._n += count
        with self.app.transaction() as session:
            conns = [
                Connection(
                    account_id=1,
                    type="postgres",
                    name=f"Bulk {start + i}",
                    mode="direct",
                    settings={},
                    credentials=cipher,
                    owner_id=owner_id,
                    status="disconnected",
                    last_error_code="28P01",
                    last_error_message="password authentication failed",
                    created_at=started_at,
                    updated_at=started_at,
                )
                for i in range(count)
            ]
            session.add_all(conns)
            session.flush()
            episodes = [Disconnection(connection_id=c.id, started_at=started_at) for c in conns]
            session.add_all(episodes)
            session.flush()
            return [e.id for e in episodes]

    def notified(self, disconnection_id: int, state: str, at: datetime) -> None:
        """Give a disconnection the notification an earlier run left (`sent`, `unknown`,
        `released`, ...), with `awaiting_email` in step, as `relink.emailing.ledger` writes it."""
        with self.app.transaction() as session:
            session.add(
                Notification(
                    disconnection_id=disconnection_id,
                    state=state,
                    recipients=[OWNER],
                    attempts=1,
                    provider_message_id="earlier-run" if state == "sent" else None,
                    claimed_at=at,
                    sent_at=at if state == "sent" else None,
                    updated_at=at,
                )
            )
            session.get(Disconnection, disconnection_id).awaiting_email = awaiting_email(state)

    def close(self, disconnection_id: int, at: datetime) -> None:
        with self.app.transaction() as session:
            session.get(Disconnection, disconnection_id).ended_at = at

    def set_user(self, email: str, **changes: Any) -> None:
        from relink.models import User

        with self.app.transaction() as session:
            user = session.scalar(sa.select(User).where(User.email == email))
            for key, value in changes.items():
                setattr(user, key, value)

    def notifications(self) -> dict[int, Notification]:
        """Every notification, by disconnection id."""
        with self.app.sessions() as session:
            rows = session.scalars(sa.select(Notification)).all()
            return {n.disconnection_id: n for n in rows}

    def states(self) -> dict[int, str]:
        return {d: n.state for d, n in self.notifications().items()}

    def row_counts(self) -> dict[str, int]:
        with self.app.sessions() as session:
            return {
                table: session.scalar(sa.select(sa.func.count()).select_from(sa.table(table)))
                for table in ("notifications", "audit_events", "disconnections")
            }


def emails_per_disconnection(bodies: Iterable[dict[str, Any]]) -> Counter[int]:
    """How many delivered emails each disconnection got (custom arg disconnection_id)."""
    return Counter(int(body["custom_args"]["disconnection_id"]) for body in bodies)


def read_log(path: Any) -> list[dict[str, Any]]:
    """The bodies in a standalone endpoint's log (one JSON line per delivered email)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line)["body"] for line in text.splitlines() if line.strip()]


class Sleeps(list):
    """An injected sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# --- awaiting_email: the due index's copy of the notification state ------------------------


def flags(app) -> dict[int, bool]:
    with app.sessions() as session:
        return dict(
            session.execute(sa.select(Disconnection.id, Disconnection.awaiting_email)).all()
        )


def assert_in_step(app) -> None:
    """Every disconnection, open or closed: awaiting_email == (no notification, or a
    released one)."""
    with app.sessions() as session:
        rows = session.execute(
            sa.select(Disconnection.id, Disconnection.awaiting_email, Notification.state)
            .outerjoin(Notification, Notification.disconnection_id == Disconnection.id)
            .order_by(Disconnection.id)
        ).all()
    wrong = {d: (flag, state) for d, flag, state in rows if flag != (state in (None, *NOT_YET))}
    assert wrong == {}


def due_by_notifications(app, now) -> list[int]:
    """The due ids as the rule reads them from `notifications` (no flag)."""
    with app.sessions() as session:
        return sorted(
            session.scalars(
                sa.select(Disconnection.id).where(
                    Disconnection.ended_at.is_(None),
                    Disconnection.started_at <= cutoff(now),
                    not_notified(),
                )
            )
        )


def due_ids_at(app, now) -> list[int]:
    with app.sessions() as session:
        ids = due_ids(session, now=now)
    assert ids == due_by_notifications(app, now)
    return ids

"""The exactly-once ledger (relink/emailing/ledger.py) and the due query that reads its
flag (relink/emailing/due.py), on a real database (SQLite, and PostgreSQL when
configured): every claim, mark, expiry and release keeps `awaiting_email` in step with
the notification, and the SQL form of the 24-hour rule agrees with the pure one
(relink/domain/due.py) on generated data."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from relink.domain.due import DUE_AFTER, NOT_YET, Episode, awaiting_email, due
from relink.emailing.due import due_ids, load_due
from relink.emailing.ledger import HeldClaim, claim, expire_stale_claims, mark, release
from relink.emailing.mailer import Attempt, Result
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from relink.errors import Conflict
from relink.models import Connection, Disconnection, Notification
from relink.models import NotificationState as State
from tests.support.emaildata import (
    RUN,
    Sleeps,
    World,
    assert_in_step,
    due_ids_at,
    flags,
)

pytestmark = pytest.mark.both_backends  # the ledger's claims take row locks (FOR UPDATE)

H = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
LEASE = NotifyPolicy().lease


@pytest.fixture
def world(relink_app):
    return World(relink_app)


# --- the due query is the pure rule ----------------------------------------------------------


@hsettings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    episodes=st.lists(
        st.tuples(
            st.integers(-60, 60),  # started, hours from the run
            st.one_of(st.none(), st.integers(-60, 0)),  # ended, hours from the run
            st.sampled_from(
                [None, "sent", "released", "unknown", "failed", "claimed", "outbox", "no_recipient"]
            ),
        ),
        max_size=8,
    )
)
def test_the_due_query_is_the_pure_rule(relink_app, world, episodes):
    expected = []
    conn_ids = empty_but_connections(relink_app, world, len(episodes))
    with relink_app.transaction() as session:
        for conn_id, (start, end, state) in zip(conn_ids, episodes, strict=False):
            d = Disconnection(
                connection_id=conn_id,
                started_at=RUN + start * H,
                ended_at=None if end is None else RUN + max(end, start) * H,
                awaiting_email=state is None or state in NOT_YET,  # as relink.emailing.ledger
            )
            session.add(d)
            session.flush()
            if state:
                session.add(
                    Notification(disconnection_id=d.id, state=state, claimed_at=RUN, updated_at=RUN)
                )
            expected.append(Episode(d.id, d.started_at, d.ended_at, state))
    with relink_app.sessions() as session:
        assert due_ids(session, now=RUN) == [e.id for e in due(expected, RUN)]


def empty_but_connections(app, world, count: int) -> list[int]:
    """No disconnection nor notification left (a new hypothesis example), and at least
    `count` connections: their ids."""
    with app.transaction() as session:
        session.query(Notification).delete()
        session.query(Disconnection).delete()
        conn_ids = list(session.scalars(sa.select(Connection.id).order_by(Connection.id)))
    while len(conn_ids) < count:
        conn_ids.append(world.connection())
    return conn_ids


MARKS = {
    s.value: s for s in (State.SENT, State.OUTBOX, State.FAILED, State.UNKNOWN, State.RELEASED)
}
LEDGER_STEPS = ("claim", "nobody", *MARKS, "expire", "release", "close")
"""What the test does to one disconnection: claim its email (for a recipient, or with
nobody to email), mark the claim with a result, expire every stale claim, release an
unknown one (an admin), or close the disconnection (a reconnect)."""


@st.composite
def ledger_histories(draw):
    """Disconnections (started, hours from RUN), the ledger steps the test takes, one
    disconnection's steps in order but interleaved with the others', and the query's
    `now` and `due_after`."""
    starts = draw(st.lists(st.integers(-60, 60), min_size=1, max_size=6))
    first = st.sampled_from([(), (), ("claim",), ("claim",), ("nobody",), ("close",)])
    # then any step, with more of those that lead back to due (unknown -> released)
    then = st.sampled_from([*LEDGER_STEPS, "claim", "unknown", "released", "release", "release"])
    plans = [[*draw(first), *draw(st.lists(then, max_size=5))] for _ in starts]
    total = sum(map(len, plans))
    picks = draw(st.lists(st.integers(0, len(starts) - 1), min_size=total, max_size=total))
    steps = []
    for pick in picks:
        index = next(i for i in [pick, *range(len(plans))] if plans[i])
        steps.append((index, plans[index].pop(0)))
    due_after = draw(st.sampled_from([DUE_AFTER, 12 * H]))
    if draw(st.booleans()):  # at one disconnection's cutoff, or a minute either side
        edge = draw(st.sampled_from([timedelta(0), timedelta(0), -MINUTE, MINUTE]))
        now = RUN + draw(st.sampled_from(starts)) * H + due_after + edge
    else:
        now = RUN + draw(st.integers(-24 * 60, 72 * 60)) * MINUTE
    return starts, steps, now, due_after


@dataclass
class Expected:
    """One disconnection as the test expects the ledger to have left it."""

    started_at: datetime
    ended_at: datetime | None = None
    state: str | None = None
    held: HeldClaim | None = None  # the latest claim, which `mark` is fenced by


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=ledger_histories())
def test_through_the_ledger_the_due_query_is_the_pure_rule(relink_app, world, history):
    """Notifications written only by the ledger (claim, mark, expire, release), then the
    due query over their `awaiting_email` flag at a random `now`: the pure rule's answer."""
    starts, steps, now, due_after = history
    app = relink_app
    conn_ids = empty_but_connections(app, world, len(starts))
    ids = [world.disconnection(c, RUN + h * H) for c, h in zip(conn_ids, starts, strict=False)]
    expected = {d: Expected(RUN + h * H) for d, h in zip(ids, starts, strict=True)}
    clock = RUN
    for index, step in steps:
        clock += 5 * MINUTE  # expiry reaches claims three steps old (LEASE: 15 minutes)
        d = ids[index]
        e = expected[d]
        if step in ("claim", "nobody"):
            (item,) = load_due(app, [d])
            nobody = {"state": State.NO_RECIPIENT, "reason": "nobody"} if step == "nobody" else {}
            held = claim(app, item, now=clock, **nobody)
            takes = e.ended_at is None and awaiting_email(e.state)
            assert (held is not None) == takes
            if takes:
                e.state, e.held = (State.NO_RECIPIENT if nobody else State.CLAIMED), held
        elif step in MARKS and e.held is not None:
            state = MARKS[step]
            delivered = state in (State.SENT, State.OUTBOX)
            allowed = (
                (State.CLAIMED, State.UNKNOWN, State.RELEASED) if delivered else (State.CLAIMED,)
            )
            assert mark(app, e.held, state, now=clock, attempts=1) == (e.state in allowed)
            if e.state in allowed:
                e.state = state
        elif step == "expire":
            stale = [
                x
                for x in expected.values()
                if x.state == State.CLAIMED and x.held.claimed_at <= clock - LEASE
            ]
            assert expire_stale_claims(app, now=clock, lease=LEASE) == len(stale)
            for x in stale:
                x.state = State.UNKNOWN
        elif step == "release" and e.state is not None:
            notification_id = world.notifications()[d].id
            try:
                with app.transaction() as session:
                    release(session, notification_id, now=clock)
            except Conflict:
                assert e.state != State.UNKNOWN
            else:
                assert e.state == State.UNKNOWN
                e.state = State.RELEASED
        elif step == "close" and e.ended_at is None:
            e.ended_at = max(clock, e.started_at)
            world.close(d, e.ended_at)

    assert world.states() == {d: e.state for d, e in expected.items() if e.state is not None}
    assert flags(app) == {d: awaiting_email(e.state) for d, e in expected.items()}
    episodes = [Episode(d, e.started_at, e.ended_at, e.state) for d, e in expected.items()]
    rule = due(episodes, now, due_after)
    longest_open = sorted(rule, key=lambda e: (e.started_at, e.id))
    with app.sessions() as session:
        assert due_ids(session, now=now, due_after=due_after) == [e.id for e in rule]
        for limit in range(1, len(rule) + 1):  # with a limit: the longest open ones
            assert due_ids(session, now=now, due_after=due_after, limit=limit) == sorted(
                e.id for e in longest_open[:limit]
            )


# --- awaiting_email follows the ledger ------------------------------------------------------


def test_awaiting_email_follows_every_transition(relink_app, world):
    app = relink_app
    a, b, c, d, e, f, g = (world.broken(RUN - timedelta(hours=25)) for _ in range(7))
    items = {i.disconnection_id: i for i in load_due(app, [a, b, c, d, e, f, g])}
    assert flags(app) == dict.fromkeys([a, b, c, d, e, f, g], True)  # the server default

    def step(expected: dict[int, bool]) -> None:
        assert {k: flags(app)[k] for k in expected} == expected
        assert_in_step(app)

    def end(held, state, at=RUN):
        assert mark(app, held, state, now=at, attempts=1, message_id="m-1", error="x")

    # claim (INSERT) -> false; sent / failed / unknown stay false
    held_a, held_b, held_c = (claim(app, items[x], now=RUN) for x in (a, b, c))
    step({a: False, b: False, c: False, d: True})
    end(held_a, State.SENT)
    end(held_b, State.FAILED)
    end(held_c, State.UNKNOWN)
    step({a: False, b: False, c: False})
    # a stale claim attempt of an emailed one writes nothing
    assert claim(app, items[a], now=RUN + H) is None
    step({a: False})
    # released (retryable failure) -> true; claim of the released row -> false
    held_d = claim(app, items[d], now=RUN)
    end(held_d, State.RELEASED)
    step({d: True})
    assert due_ids_at(app, RUN + timedelta(days=1)) == [d, e, f, g]
    again = load_due(app, [d])[0]
    assert again.notification_state == "released"
    held_d = claim(app, again, now=RUN + timedelta(days=1))
    step({d: False})
    end(held_d, State.SENT, RUN + timedelta(days=1))
    step({d: False})
    # admin release of an unknown one -> true, then the next run's claim -> false
    with app.transaction() as session:
        release(session, world.notifications()[c].id, now=RUN + H)
    step({c: True})
    held_c = claim(app, load_due(app, [c])[0], now=RUN + timedelta(days=1))
    step({c: False})
    end(held_c, State.OUTBOX, RUN + timedelta(days=1))
    step({c: False})
    # expired claim -> unknown: stays false; released by an admin -> true; the dead
    # run's late report of a delivery -> sent, false
    held_e = claim(app, items[e], now=RUN)
    assert expire_stale_claims(app, now=RUN + LEASE + timedelta(seconds=1)) == 1
    assert world.states()[e] == "unknown"
    step({e: False})
    with app.transaction() as session:
        release(session, world.notifications()[e].id, now=RUN + H)
    step({e: True})
    end(held_e, State.SENT, RUN + H)
    assert world.states()[e] == "sent"
    step({e: False})
    # nobody to email -> no_recipient, false
    assert claim(app, items[f], now=RUN, state=State.NO_RECIPIENT, reason="nobody")
    step({f: False})
    # closed before the claim: no row, nothing written (the flag stays true; the
    # index's ended_at IS NULL leaves it out)
    world.close(g, RUN - H)
    assert claim(app, items[g], now=RUN) is None
    assert g not in world.notifications()
    step({g: True})
    # a released one closed meanwhile is not taken back
    h = world.broken(RUN - timedelta(hours=25))
    held_h = claim(app, load_due(app, [h])[0], now=RUN)
    end(held_h, State.RELEASED)
    world.close(h, RUN + H)
    assert claim(app, load_due(app, [h])[0], now=RUN + timedelta(days=1)) is None
    assert world.states()[h] == "released"
    step({h: True})
    assert due_ids_at(app, RUN + timedelta(days=2)) == []


def test_migration_backfills_awaiting_email_and_keeps_the_notifications(relink_app, world):
    from relink import db

    states = [None, *sorted(str(s) for s in State)]
    episodes = {world.broken(RUN - timedelta(hours=30)): state for state in states}
    with relink_app.transaction() as session:
        session.add_all(
            Notification(disconnection_id=d, state=state, claimed_at=RUN, updated_at=RUN)
            for d, state in episodes.items()
            if state
        )
    db.downgrade(relink_app.engine, "0004")
    db.upgrade(relink_app.engine)
    assert world.states() == {d: state for d, state in episodes.items() if state}
    assert flags(relink_app) == {d: state in (None, "released") for d, state in episodes.items()}
    assert_in_step(relink_app)


class ScriptedMailer:
    """Answers with the scripted results in order, then SENT."""

    def __init__(self, results, delivered_state=State.SENT) -> None:
        self.results = list(results)
        self.delivered_state = delivered_state
        self._lock = threading.Lock()

    def send(self, email) -> Attempt:
        with self._lock:
            result = self.results.pop(0) if self.results else Result.SENT
        if result is Result.SENT:
            return Attempt(result, message_id=f"m-{email.reference}")
        return Attempt(result, error=f"scripted {result}")


class Crash(Exception):
    pass


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    days=st.lists(
        st.fixed_dictionaries(
            {
                "new": st.lists(st.integers(0, 48), max_size=3),  # hours before the run
                "results": st.lists(st.sampled_from(list(Result)), max_size=6),
                "crash": st.one_of(st.none(), st.integers(0, 5)),  # the n-th claim dies
                "release": st.lists(st.integers(0, 20), max_size=2),  # unknown ones, by rank
                "close": st.lists(st.integers(0, 20), max_size=2),  # open ones, by rank
                "outbox": st.booleans(),
                "concurrency": st.integers(1, 3),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_awaiting_email_is_in_step_after_random_runs(relink_app, world, days):
    app = relink_app
    with app.transaction() as session:
        session.query(Notification).delete()
        session.query(Disconnection).delete()
    for number, day in enumerate(days):
        now = RUN + timedelta(days=number)
        for hours in day["new"]:
            world.broken(now - timedelta(hours=hours))
        claims = []

        def after_claim(item, crash_at=day["crash"], claims=claims):
            claims.append(item.disconnection_id)
            if crash_at is not None and len(claims) == crash_at + 1:
                raise Crash

        mailer = ScriptedMailer(day["results"], State.OUTBOX if day["outbox"] else State.SENT)
        due_before = due_ids_at(app, now)  # also checks flag == notifications
        with contextlib.suppress(Crash):
            send_due(
                app,
                now=now,
                mailer=mailer,
                sleep=Sleeps(),
                hooks=SendHooks(after_claim=after_claim),
                policy=NotifyPolicy(concurrency=day["concurrency"], batch_size=2),
            )
        assert_in_step(app)
        assert set(claims) <= set(due_before)
        unknown = sorted(d for d, s in world.states().items() if s == "unknown")
        for rank in day["release"]:
            if unknown:
                with app.transaction() as session:
                    release(
                        session, world.notifications()[unknown[rank % len(unknown)]].id, now=now
                    )
                unknown = sorted(d for d, s in world.states().items() if s == "unknown")
        with app.sessions() as session:
            opened = list(
                session.scalars(
                    sa.select(Disconnection.id)
                    .where(Disconnection.ended_at.is_(None))
                    .order_by(Disconnection.id)
                )
            )
        for rank in day["close"]:
            if opened:
                world.close(opened.pop(rank % len(opened)), now + H)
        assert_in_step(app)
        due_ids_at(app, now + timedelta(days=1))

"""The SQL visibility filter and the pure access rule agree, for any account layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relink.connections import list_visible, ref_of
from relink.directory import viewer_of
from relink.domain.access import can_view
from relink.models import Account, Connection, ConnectionShare, User

pytestmark = pytest.mark.both_backends  # who sees what is a SQL filter

T0 = datetime(2026, 1, 1, tzinfo=UTC)

layouts = st.fixed_dictionaries(
    {
        "users": st.lists(
            st.tuples(st.sampled_from([1, 2]), st.sampled_from(["admin", "member"]), st.booleans()),
            min_size=1,
            max_size=6,
        ),
        "connections": st.lists(st.integers(0, 5), max_size=8),  # owner index
        "shares": st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5)), max_size=10),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=layouts)
def test_sql_filter_matches_the_pure_rule(relink_app, layout):
    with relink_app.sessions() as session, session.begin():
        accounts = [Account(id=i, name=f"a{i}", created_at=T0) for i in (1, 2)]
        session.add_all(accounts)
        users = [
            User(
                account_id=acc,
                email=f"u{i}@x.test",
                name=f"u{i}",
                role=role,
                active=active,
                created_at=T0,
            )
            for i, (acc, role, active) in enumerate(layout["users"])
        ]
        session.add_all(users)
        session.flush()
        conns = []
        for i, owner_index in enumerate(layout["connections"]):
            owner = users[owner_index % len(users)]
            conns.append(
                Connection(
                    account_id=owner.account_id,
                    type="postgres",
                    name=f"c{i}",
                    credentials="x",
                    owner_id=owner.id,
                    created_at=T0,
                    updated_at=T0,
                )
            )
        session.add_all(conns)
        session.flush()
        pairs = (
            {(conns[c % len(conns)].id, users[u % len(users)].id) for c, u in layout["shares"]}
            if conns
            else set()
        )
        session.add_all(ConnectionShare(connection_id=c, user_id=u) for c, u in pairs)
        session.flush()
        session.expire_all()
        for user in users:
            viewer = viewer_of(user)
            by_sql = [c.id for c in list_visible(session, viewer)]
            by_rule = [
                c.id for c in sorted(conns, key=lambda c: c.id) if can_view(viewer, ref_of(c))
            ]
            assert by_sql == by_rule
        session.rollback()
    with relink_app.sessions() as session:
        assert session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_keyset_pages_cover_every_connection_once(relink_app):
    with relink_app.transaction() as session:
        session.add(Account(id=1, name="a", created_at=T0))
        admin = User(account_id=1, email="a@x.test", name="a", role="admin", created_at=T0)
        session.add(admin)
        session.flush()
        session.add_all(
            Connection(
                account_id=1,
                type="postgres",
                name=f"c{i}",
                credentials="x",
                owner_id=admin.id,
                created_at=T0,
                updated_at=T0,
            )
            for i in range(23)
        )
    with relink_app.sessions() as session:
        viewer = viewer_of(session.scalar(sa.select(User)))
        seen, after = [], 0
        while page := list_visible(session, viewer, after_id=after, limit=5):
            seen += [c.id for c in page]
            after = page[-1].id
    assert seen == list(range(1, 24))

"""The email rule and the recipient choice, pure: no database, no clock."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from relink.notify import (
    DUE_AFTER,
    Episode,
    Person,
    choose_recipients,
    due,
    is_due,
    valid_address,
)

RUN = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 07:00 MST
DAY = timedelta(days=1)


def test_no_email_at_23h59m_disconnected():
    assert not is_due(Episode(1, RUN - timedelta(hours=23, minutes=59)), RUN)


def test_email_at_exactly_24h00m_disconnected():
    assert is_due(Episode(1, RUN - timedelta(hours=24)), RUN)


def test_no_second_email_after_52_hours_disconnected():
    emailed = Episode(1, RUN - timedelta(hours=52), notification="sent")
    assert not is_due(emailed, RUN)
    for state in ("sent", "outbox", "failed", "unknown", "claimed", "no_recipient"):
        assert not is_due(Episode(1, RUN - timedelta(days=9), notification=state), RUN), state


def test_released_notification_is_handed_to_the_next_run():
    assert is_due(Episode(1, RUN - timedelta(hours=30), notification="released"), RUN)


def test_closed_before_the_run_gets_no_email():
    closed = Episode(1, RUN - timedelta(hours=40), ended_at=RUN - timedelta(hours=1))
    assert not is_due(closed, RUN)


def test_reconnected_then_broken_again_is_a_new_disconnection_with_its_own_email():
    first = Episode(1, RUN - 3 * DAY, ended_at=RUN - 2 * DAY, notification="sent")
    second = Episode(2, RUN - timedelta(hours=30))
    assert due([first, second], RUN) == [second]
    recent = Episode(3, RUN - timedelta(hours=2))  # broke again this morning: tomorrow
    assert due([first, recent], RUN) == []
    assert due([first, recent], RUN + DAY) == [recent]


def test_missed_run_is_caught_up_by_the_next_one():
    episodes = [Episode(1, RUN - timedelta(hours=20)), Episode(2, RUN - timedelta(hours=2))]
    # the run at RUN was missed (server down); the next one is two days later
    later = RUN + 2 * DAY + timedelta(hours=3)
    assert [e.id for e in due(episodes, later)] == [1, 2]


def test_threshold_is_configurable():
    episode = Episode(1, RUN - timedelta(hours=13))
    assert not is_due(episode, RUN)
    assert is_due(episode, RUN, due_after=timedelta(hours=12))


@given(
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
    runs=st.lists(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5)), max_size=6),
)
def test_once_sent_never_due_again_and_every_open_episode_becomes_due(age, runs):
    """Whatever the run times, an open episode is emailed by the first run at or after
    started_at + 24 h, and by no run after that."""
    started = RUN - age
    notification = None
    sent_at = []
    for offset in sorted(runs):
        now = RUN + offset
        episode = Episode(1, started, notification=notification)
        if is_due(episode, now):
            sent_at.append(now)
            notification = "sent"
    assert len(sent_at) <= 1
    if sent_at:
        assert sent_at[0] - started >= DUE_AFTER
    elif runs and RUN + max(runs) - started >= DUE_AFTER:
        raise AssertionError("a due episode was never emailed")


# --- recipients --------------------------------------------------------------------------

ann = Person("ann@acme.test", active=True, role="admin")
zed = Person("zed@acme.test", active=True, role="admin")
old_admin = Person("old@acme.test", active=False, role="admin")
cid = Person("cid@acme.test", active=True, role="member")


def test_recipient_is_the_active_owner():
    owner = Person("bob@acme.test")
    assert choose_recipients(owner, [ann, zed]).to == ("bob@acme.test",)
    assert choose_recipients(owner, [ann]).why == "owner"


def test_owner_inactive_falls_back_to_the_active_admins():
    owner = Person("bob@acme.test", active=False)
    chosen = choose_recipients(owner, [zed, ann, old_admin, cid])
    assert chosen.to == ("ann@acme.test", "zed@acme.test")
    assert "inactive" in chosen.why


def test_owner_without_a_valid_address_falls_back_to_the_admins():
    chosen = choose_recipients(Person("bob at acme"), [ann])
    assert chosen.to == ("ann@acme.test",)
    assert "not valid" in chosen.why


def test_nobody_to_email_says_why():
    chosen = choose_recipients(Person("bob@acme.test", active=False), [old_admin, cid])
    assert chosen.nobody
    assert chosen.why == (
        "the owner bob@acme.test is inactive and the account has no active admin "
        "with a valid address"
    )


def test_valid_addresses():
    assert valid_address("bob@acme.test")
    for bad in (
        "",
        None,
        "bob",
        "bob@",
        "@acme.test",
        "bob@acme",
        "b ob@acme.test",
        "bob@acme.test\r\nBcc: x@y.z",
        "a@b@c.de",
    ):
        assert not valid_address(bad), bad

"""The 24-hour rule (relink/domain/due.py), pure: no database, no clock."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from relink.domain.due import DUE_AFTER, Episode, due, is_due

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

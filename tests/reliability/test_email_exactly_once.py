"""Email exactly once: whatever happens to the runs and to SendGrid, an owner gets one email
per disconnection (at most one when the run could not know whether it went out).

Each trial (tests/support/email_trials.py) seeds due and not-due disconnections on
PostgreSQL, starts 2-4 runs at once in processes of their own, SIGKILLs the first run
that reaches a crash point (before the claim, after it, during the request, after the
202), while SendGrid answers 429 with Retry-After, 500, 400, or hangs past the client
timeout. Then SendGrid is healthy again and a clean run follows. Every trial's seed is
recorded; `RELINK_EMAIL_TRIAL_SEED=N` replays trial N alone.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.support.email_trials import Tally, TrialPlan, Trials
from tests.support.emaildata import API_KEY, World
from tests.support.notify_crash import CRASH_POINTS
from tests.support.promises import scale
from tests.support.sendgrid_endpoint import SendGridEndpoint

TRIALS = scale(20, 200)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def trial_seeds() -> list[int]:
    """TRIALS consecutive seeds from a random start, or the one seed asked for."""
    replay = os.environ.get("RELINK_EMAIL_TRIAL_SEED")
    if replay:
        return [int(replay)]
    start = random.SystemRandom().randrange(1_000_000)
    return list(range(start, start + TRIALS))


@pytest.mark.promise(
    "Each due disconnection's email is received exactly once (at most once when recorded "
    "unknown), whatever runs are SIGKILLed, run at once, or SendGrid answers"
)
def test_every_due_email_is_received_exactly_once(relink_app, settings, tmp_path, record_property):
    seeds = trial_seeds()
    record_property("seeds", f"{seeds[0]}-{seeds[-1]}")
    tally = Tally()
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        trials = Trials(World(relink_app), settings, endpoint, tmp_path)
        for seed in seeds:
            plan = TrialPlan.draw(seed)
            try:
                verdict = trials.run(plan)
            except Exception as exc:  # the trial broke: say which one
                raise AssertionError(plan.describe()) from exc
            assert not verdict.problems(), verdict.failure_message()
            tally.add(verdict)
    record_property("trials", len(seeds))
    record_property("outcome", tally.line())

    assert tally.duplicates == 0
    if len(seeds) >= len(CRASH_POINTS) * 2:  # the faults were really there, every kind
        assert all(tally.kills[point] for point in CRASH_POINTS), tally.line()
        assert all(tally.answers[k] for k in ("429", "500", "400", "hang", "202 lost")), (
            tally.line()
        )

"""Test helper: one email run in this process that stops at a crash point, where the test
SIGKILLs it.

    RELINK_TEST_CRASH_AT=after_claim|after_send RELINK_TEST_NOW=<ISO 8601> \
        python -m tests.support.notify_crash

Settings come from the environment (RELINK_*), as for `relink notify`. At the crash point
the process prints ``at <point>`` and waits; it never gets past it by itself. The crash
point is a hook of the core (`SendHooks`); only this helper reads the variables.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from relink.app import Relink
from relink.notifications import NotifyPolicy, SendHooks, send_due

POINTS = ("after_claim", "after_send")


def main() -> int:
    point = os.environ["RELINK_TEST_CRASH_AT"]
    if point not in POINTS:
        raise SystemExit(f"RELINK_TEST_CRASH_AT must be one of {POINTS}, got {point!r}")
    now = datetime.fromisoformat(os.environ["RELINK_TEST_NOW"])

    def stop_here(*_: Any) -> None:
        print(f"at {point}", flush=True)
        time.sleep(120)  # the test kills us here
        raise SystemExit("not killed in time")

    app = Relink()
    app.ensure_schema()
    send_due(
        app, now=now, policy=NotifyPolicy(concurrency=1), hooks=SendHooks(**{point: stop_here})
    )
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

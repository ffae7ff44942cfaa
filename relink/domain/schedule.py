"""When the daily email run happens, as plain data, and its next time: the deployment
definitions (deployments/definitions.py, and through them prefect.yaml) and `relink
status` both read it from here."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

EMAIL_TIME_ZONE = "America/Phoenix"
"""MST all year (UTC−07:00): the daily run's time zone and the emails' clock."""

EMAIL_AT = time(7, 0)
"""The daily run's local time in `EMAIL_TIME_ZONE`."""

EMAIL_CRON = f"{EMAIL_AT.minute} {EMAIL_AT.hour} * * *"
"""The same, as the deployment's cron schedule."""


def next_email_run(now: datetime) -> datetime:
    """The next daily email run at or after `now`, in `now`'s time zone."""
    zone = ZoneInfo(EMAIL_TIME_ZONE)
    local = now.astimezone(zone)
    run = datetime.combine(local.date(), EMAIL_AT, tzinfo=zone)
    if run < local:
        run += timedelta(days=1)
    return run.astimezone(now.tzinfo)

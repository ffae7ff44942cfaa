"""When things run, as plain data: the time zone of the daily email run."""

from __future__ import annotations

EMAIL_TIME_ZONE = "America/Phoenix"
"""MST all year (UTC−07:00): the daily run's time zone and the emails' clock."""

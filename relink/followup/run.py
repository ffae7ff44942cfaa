"""The follow-up, as it reads: check the connection's stored credentials again (load),
decide from what the check found (plan: `Verdict`), refresh its datasets when they
work or email the owner the reconnect link when asked to (act), and report what
happened (record: `FollowupReport`, with its markdown and log line). Its I/O steps
come in as `FollowupSteps`: the reconnect-connection flow passes Prefect tasks and the
refresh-datasets subflow; `plain_steps` are plain calls in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relink.app import Relink
from relink.directory import get_user
from relink.domain.words import Status
from relink.reconnecting.email_link import email_reconnect_link
from relink.reconnecting.recheck import recheck
from relink.refreshing.results import RefreshPolicy
from relink.refreshing.run import refresh_connection
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow

Step = Callable[[int, str], Awaitable[dict[str, Any]]]


class Verdict(StrEnum):
    WORKS = "works"  # the stored credentials work: the datasets are refreshed
    WAITS_FOR_ADMIN = "waits_for_admin"  # Relink's own setup is wrong: no owner can help
    NOT_CHECKED = "not_checked"  # the source could not be asked: Relink keeps checking
    NEEDS_RECONNECT = "needs_reconnect"  # still broken: its owner reconnects it


def verdict_of(checked: Mapping[str, Any]) -> Verdict:
    """What a re-check (`Rechecked.as_dict()`) leaves to do."""
    if checked["status"] == Status.CONNECTED:
        return Verdict.WORKS
    if checked["status"] == Status.MISCONFIGURED:
        return Verdict.WAITS_FOR_ADMIN
    if checked["reconnect_url"] is None:  # not broken: the source could not be asked
        return Verdict.NOT_CHECKED
    return Verdict.NEEDS_RECONNECT


@dataclass(frozen=True)
class FollowupSteps:
    """The follow-up's I/O steps, each (connection id, the requester's email) -> a plain
    dict: ids, names, counts, never a secret (a Prefect task's inputs and result are
    stored)."""

    recheck: Step
    """-> `Rechecked.as_dict()`: the stored credentials checked through the state rules."""
    refresh: Step
    """-> `RefreshSummary.as_dict()`: the connection's datasets refreshed for the requester."""
    email_link: Step
    """-> `DisconnectionEmailed.as_dict()`: the disconnection's one email, through the ledger."""


@dataclass(frozen=True)
class FollowupReport:
    connection_id: int
    verdict: Verdict
    checked: dict[str, Any]
    refresh: dict[str, Any] | None = None
    emailed: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        link = self.checked["reconnect_url"] if self.verdict is Verdict.NEEDS_RECONNECT else None
        return {
            "connection": self.checked,
            "refresh": self.refresh,
            "reconnect_url": link,
            "emailed": self.emailed,
        }

    def log_line(self) -> tuple[int, str]:
        """The level and line a log of the follow-up gets."""
        c = self.checked
        head = f"connection {self.connection_id} ({c['connection']})"
        why = c["message"] or c["code"] or c["outcome"]
        if self.verdict is Verdict.WORKS:
            r = self.refresh or {}
            return logging.INFO, (
                f"{head} works again; datasets: {r.get('ok', 0)} refreshed, "
                f"{r.get('error', 0)} failed, {r.get('skipped', 0)} skipped"
            )
        if self.verdict is Verdict.WAITS_FOR_ADMIN:
            return logging.WARNING, f"{head} waits for an admin to fix the installation: {why}"
        if self.verdict is Verdict.NOT_CHECKED:
            return logging.WARNING, f"{head} could not be checked: {why}; Relink keeps checking"
        return logging.WARNING, (
            f"{head} is still {c['status']} ({c['code'] or c['outcome']}); its owner "
            f"{c['owner']} reconnects it at {c['reconnect_url']}"
        )

    def markdown(self) -> str:
        c = self.checked
        head = f"# Connection {self.connection_id} ({_md(c['connection'])})"
        why = _md(c["message"] or c["code"] or c["outcome"])
        if self.verdict is Verdict.WORKS:
            r = self.refresh or {}
            closed = "" if c["disconnection_closed"] else " (none was open)"
            return (
                f"{head} works again\n\n"
                f"The stored credentials were accepted; the disconnection is closed{closed}.\n\n"
                f"Datasets: {r.get('ok', 0)} refreshed, {r.get('error', 0)} failed, "
                f"{r.get('skipped', 0)} skipped.\n"
            )
        if self.verdict is Verdict.WAITS_FOR_ADMIN:
            return (
                f"{head} waits for an administrator\n\n"
                "Relink's own setup for this source is wrong; reconnecting cannot help, and its "
                f"owner is not emailed.\n\n{_md(c['message'] or c['code'])}\n"
            )
        if self.verdict is Verdict.NOT_CHECKED:
            return (
                f"{head} could not be checked\n\n"
                "The source could not be asked; this is not a credentials problem, so there is "
                f"nothing for its owner to do and nobody is emailed.\n\n{why}\n"
            )
        return (
            f"{head} still needs a reconnect\n\n"
            f"Status **{c['status']}**: {_md(c['message'] or c['outcome'])}\n\n"
            f"Owner: {c['owner']}\n\n"
            f"[Reconnect {_md(c['connection'])}]({c['reconnect_url']})\n\n"
            f"{_told(self.emailed)}\n"
        )


async def run_followup(
    connection_id: int,
    requested_by: str,
    *,
    steps: FollowupSteps,
    notify_owner: bool = False,
) -> FollowupReport:
    """Check connection `connection_id` again for `requested_by` (who must be allowed to
    reconnect it); refresh its datasets when its credentials work, else, when
    `notify_owner`, email its owner the reconnect link (the disconnection's one email).
    An outage or a misconfigured installation is nobody's to reconnect: no email."""
    checked = await steps.recheck(connection_id, requested_by)
    verdict = verdict_of(checked)
    refreshed = emailed = None
    if verdict is Verdict.WORKS:
        refreshed = await steps.refresh(connection_id, requested_by)
    elif verdict is Verdict.NEEDS_RECONNECT and notify_owner:
        emailed = await steps.email_link(connection_id, requested_by)
    return FollowupReport(connection_id, verdict, checked, refreshed, emailed)


def plain_steps(
    app: Relink,
    *,
    check_policy: CheckPolicy | None = None,
    refresh_policy: RefreshPolicy | None = None,
) -> FollowupSteps:
    """The steps as plain calls in this process."""

    async def check(connection_id: int, requested_by: str) -> dict[str, Any]:
        done = await recheck(app, connection_id, requested_by=requested_by, policy=check_policy)
        return done.as_dict()

    async def refresh(connection_id: int, requested_by: str) -> dict[str, Any]:
        actor_id = await asyncio.to_thread(_user_id, app, requested_by)
        summary = await refresh_connection(
            app, connection_id, policy=refresh_policy, actor_id=actor_id
        )
        return summary.as_dict()

    async def email(connection_id: int, requested_by: str) -> dict[str, Any]:
        sent = await asyncio.to_thread(
            email_reconnect_link, app, connection_id, requested_by=requested_by, now=utcnow()
        )
        return sent.as_dict()

    return FollowupSteps(recheck=check, refresh=refresh, email_link=email)


def _user_id(app: Relink, email: str) -> int:
    with app.sessions() as session:
        return get_user(session, email).id


def _told(emailed: Mapping[str, Any] | None) -> str:
    """What became of the email, as the ledger records it (`relink outbox list`)."""
    if emailed is None:
        return "Not emailed (run with notify_owner=true to email it)."
    if emailed["result"] in ("none", "error"):
        return f"Not emailed: {_md(emailed['error'] or emailed['why'])}."
    to = ", ".join(emailed["to"]) or "nobody"
    if emailed["earlier"]:
        return (
            f"Already emailed about this disconnection (to {_md(to)}, {emailed['result']}, "
            f"notification {emailed['notification_id']}): not sent again."
        )
    return (
        f"Emailed to {_md(to)} ({_md(emailed['why'])}): {emailed['result']} "
        f"(notification {emailed['notification_id']} in `relink outbox list`)."
    )


def _md(text: Any) -> str:
    return " ".join(str(text).split()).replace("[", "\\[").replace("]", "\\]")

"""The connection page's "Check again": whoever may reconnect a connection asks for its
stored credentials to be checked now (the problem may have been fixed at the source).
The check goes through the sweep's state rules with the visitor as the actor of what it
changes; when the credentials work the datasets are refreshed for them too: the reconnect's
follow-up (`relink.web.followups`), a flow run when Prefect is configured. One ask, no
retries: the visitor can ask again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from relink.domain.words import Outcome, Status
from relink.followup.run import Verdict
from relink.reconnecting.target import authorize
from relink.web import followups, reconnecting
from relink.web.guards import ConnectionId, check_csrf, relink_of, signed_in, web_session

router = APIRouter(include_in_schema=False)


@router.post("/connections/{connection_id}/check")
async def check_again(request: Request, connection_id: ConnectionId) -> Response:
    form = await request.form()
    relink = relink_of(request)

    def who() -> tuple[str, int]:
        with signed_in(request) as (db, user):
            authorize(db, user.email, connection_id)  # 404 hidden, 403 may not
            check_csrf(request, form)
            return user.email, user.id

    email, user_id = await run_in_threadpool(who)
    started = await followups.start(
        relink,
        connection_id,
        requested_by=email,
        requested_by_id=user_id,
        background=request.app.state.background,
        wait=relink.settings.check_timeout + followups.FOLLOWUP_WAIT,
    )
    report = started.report
    if started.flow_run is not None:
        flash = (
            f"Checking again in the flow run {started.flow_run}; this page shows the result "
            "when it ends.",
            "success",
        )
    elif report is None:
        flash = ("Checking again; this page shows the result when it ends.", "success")
    elif report.verdict is Verdict.WORKS:
        line = reconnecting.refresh_line(report.refresh)
        works = f"{report.checked['connection']!r} works: its stored credentials were accepted."
        flash = (f"{works} {line}", "success")
    else:
        flash = (_still(report.checked), "error")
    web_session(request).set_flash(*flash)
    return RedirectResponse(f"/connections/{connection_id}", status_code=303)


def _still(checked: Mapping[str, Any]) -> str:
    reason = checked["message"] or checked["code"] or checked["outcome"]
    if checked["reconnect_url"] is not None:  # broken: its owner reconnects it
        if checked["outcome"] == Outcome.UNREACHABLE:
            return (
                "Still disconnected, and the source is also unreachable right now "
                f"({checked['code'] or reason}): reconnect it once it answers again."
            )
        return f"Still disconnected ({reason}): reconnect it with new credentials."
    if checked["status"] == Status.MISCONFIGURED:
        return f"Still waiting for an administrator ({reason})."
    return f"The source could not be asked ({reason}); Relink keeps checking."

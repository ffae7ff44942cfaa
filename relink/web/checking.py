"""The connection page's "Check again": whoever may reconnect a connection asks for its
stored credentials to be checked now (the problem may have been fixed at the source).
The check goes through the sweep's state rules with the visitor as the actor of what it
changes; when the credentials work the datasets are refreshed for them too. One ask, no
retries: the visitor can ask again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from relink.domain.words import Outcome, Status
from relink.reconnecting.recheck import Rechecked, recheck
from relink.reconnecting.target import authorize
from relink.sweep.validate import CheckPolicy
from relink.web import reconnecting
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
    policy = CheckPolicy(timeout=relink.settings.check_timeout, attempts=1)
    checked = await recheck(relink, connection_id, requested_by=email, policy=policy)
    if checked.connected:
        line = await reconnecting.refresh_datasets(
            relink, connection_id, user_id, request.app.state.background
        )
        works = f"{checked.connection!r} works: its stored credentials were accepted. {line}"
        web_session(request).set_flash(works, "success")
    else:
        web_session(request).set_flash(_still(checked), "error")
    return RedirectResponse(f"/connections/{connection_id}", status_code=303)


def _still(checked: Rechecked) -> str:
    reason = checked.message or checked.code or checked.outcome
    if checked.reconnect_url is not None:  # broken: its owner reconnects it
        if checked.outcome == Outcome.UNREACHABLE:
            return (
                "Still disconnected, and the source is also unreachable right now "
                f"({checked.code or reason}): reconnect it once it answers again."
            )
        return f"Still disconnected ({reason}): reconnect it with new credentials."
    if checked.status == Status.MISCONFIGURED:
        return f"Still waiting for an administrator ({reason})."
    return f"The source could not be asked ({reason}); Relink keeps checking."

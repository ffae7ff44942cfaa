"""reconnect-connection: check a broken connection's stored credentials again; refresh
its datasets when they work, else hand its owner the reconnect link (unless Relink's own
setup is what fails: that waits for an admin, and no owner is emailed)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from flows.refresh_datasets import refresh_datasets
from tasks.refresh import email_link, recheck_connection


@flow(
    name="reconnect-connection",
    flow_run_name="reconnect connection {connection_id}",
    log_prints=False,
)
async def reconnect_connection(
    connection_id: int, requested_by: str, notify_owner: bool = False
) -> dict[str, Any]:
    """Re-check connection `connection_id` for `requested_by` (an email; they must be
    allowed to reconnect it). The problem may have been fixed at the source: then the
    disconnection closes and the datasets are refreshed. Otherwise the reconnect link
    for the owner is logged and published, and emailed when `notify_owner`: that is the
    disconnection's one email, through the same ledger as the 07:00 run, which then
    sends no other.

    Takes ids, never credentials: new credentials are entered by a person, on the
    connection's page or with `relink reconnect`.

    Args:
        connection_id: The id of the connection to re-check (see `relink connections list`).
        requested_by: The email of the person asking; they must be allowed to reconnect it.
        notify_owner: Also email the reconnect link to the connection's owner.
    """
    logger = get_run_logger()
    checked = await recheck_connection(connection_id, requested_by)
    name = checked["connection"]
    if checked["status"] == "connected":
        logger.info("connection %d (%s) works again; refreshing its datasets", connection_id, name)
        refreshed = await refresh_datasets(connection_id=connection_id, requested_by=requested_by)
        await acreate_markdown_artifact(
            f"# Connection {connection_id} ({_md(name)}) works again\n\n"
            f"The stored credentials were accepted; the disconnection is closed"
            f"{'' if checked['disconnection_closed'] else ' (none was open)'}.\n\n"
            f"Datasets: {refreshed['ok']} refreshed, {refreshed['error']} failed, "
            f"{refreshed['skipped']} skipped.\n",
            key="reconnect-connection",
            description=f"Reconnect connection {connection_id}",
        )
        return {"connection": checked, "refresh": refreshed, "reconnect_url": None}
    if checked["status"] == "misconfigured":
        logger.warning(
            "connection %d (%s) waits for an admin to fix the installation: %s",
            connection_id,
            name,
            checked["message"] or checked["code"],
        )
        await acreate_markdown_artifact(
            f"# Connection {connection_id} ({_md(name)}) waits for an administrator\n\n"
            "Relink's own setup for this source is wrong; reconnecting cannot help, and its "
            f"owner is not emailed.\n\n{_md(checked['message'] or checked['code'])}\n",
            key="reconnect-connection",
            description=f"Reconnect connection {connection_id}",
        )
        return {"connection": checked, "refresh": None, "reconnect_url": None, "emailed": None}
    if checked["reconnect_url"] is None:  # not broken: the source could not be asked
        logger.warning(
            "connection %d (%s) could not be checked: %s; Relink keeps checking",
            connection_id,
            name,
            checked["message"] or checked["code"] or checked["outcome"],
        )
        await acreate_markdown_artifact(
            f"# Connection {connection_id} ({_md(name)}) could not be checked\n\n"
            "The source could not be asked; this is not a credentials problem, so there is "
            f"nothing for its owner to do and nobody is emailed.\n\n"
            f"{_md(checked['message'] or checked['code'] or checked['outcome'])}\n",
            key="reconnect-connection",
            description=f"Reconnect connection {connection_id}",
        )
        return {"connection": checked, "refresh": None, "reconnect_url": None, "emailed": None}

    link = checked["reconnect_url"]
    logger.warning(
        "connection %d (%s) is still %s (%s); its owner %s reconnects it at %s",
        connection_id,
        name,
        checked["status"],
        checked["code"] or checked["outcome"],
        checked["owner"],
        link,
    )
    emailed = await email_link(connection_id, requested_by) if notify_owner else None
    told = _told(emailed)
    await acreate_markdown_artifact(
        f"# Connection {connection_id} ({_md(name)}) still needs a reconnect\n\n"
        f"Status **{checked['status']}**: {_md(checked['message'] or checked['outcome'])}\n\n"
        f"Owner: {checked['owner']}\n\n"
        f"[Reconnect {_md(name)}]({link})\n\n"
        f"{told}\n",
        key="reconnect-connection",
        description=f"Reconnect connection {connection_id}",
    )
    return {"connection": checked, "refresh": None, "reconnect_url": link, "emailed": emailed}


def _told(emailed: dict[str, Any] | None) -> str:
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


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("[", "\\[").replace("]", "\\]")

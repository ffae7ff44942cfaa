"""Screenshots of the Data tab and a broken connection's page, for the docs.

    .venv/bin/python tests/e2e/screenshots.py [OUTPUT_DIR]     # default docs/screenshots

Builds a throwaway account with connections in every state, serves the pages with
uvicorn and photographs them in Debian's Chromium (/usr/bin/chromium) as the admin.
Writes connections.png (the list) and connection.png (a disconnected connection).
Nothing is contacted: statuses and history are written directly.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relink import audit, passwords  # noqa: E402
from relink.app import Relink  # noqa: E402
from relink.connections import NewConnection, add_connection, share  # noqa: E402
from relink.datasets import add_dataset, add_metric  # noqa: E402
from relink.directory import add_account, add_user  # noqa: E402
from relink.domain.words import DatasetStatus, Status  # noqa: E402
from relink.models import Dataset  # noqa: E402
from relink.timeutil import utcnow  # noqa: E402
from relink.web import create_app  # noqa: E402
from tests.support.web import CHEAP_HASHER, ServedApp, free_port, make_relink  # noqa: E402

PASSWORD = "screenshots only"
ADMIN = "ada@acme.test"

# name, type, mode, owner, status, hours broken, error code, error message
CONNECTIONS = [
    ("Warehouse (PostgreSQL)", "postgres", "warehouse", ADMIN, Status.CONNECTED, None, None, None),
    (
        "Finance (MariaDB)",
        "mysql",
        "direct",
        "max@acme.test",
        Status.DISCONNECTED,
        52,
        "1045",
        "MySQL / MariaDB at db.acme.internal:3306/finance: access denied for this user name "
        "and password (the server sent 1045; MariaDB sends 1045 or 1698 for the same refusal "
        "and does not say whether the user exists)",
    ),
    (
        "Sales (Salesforce)",
        "salesforce",
        "warehouse",
        "max@acme.test",
        Status.CONNECTED,
        None,
        None,
        None,
    ),
    (
        "Marketing (HubSpot)",
        "hubspot",
        "direct",
        "olga@acme.test",
        Status.UNREACHABLE,
        None,
        "429",
        "api.hubapi.com: rate limited (429 Too Many Requests)",
    ),
    (
        "Web analytics (Google Analytics)",
        "google_analytics",
        "direct",
        "olga@acme.test",
        Status.DISCONNECTED,
        26,
        "invalid_grant",
        "the refresh token was revoked or expired (invalid_grant)",
    ),
    ("Billing API", "api_key", "direct", ADMIN, Status.UNCHECKED, None, None, None),
]


def build(relink: Relink) -> int:
    """The account; returns the id of the connection to photograph."""
    passwords.hasher = CHEAP_HASHER
    now = utcnow().replace(second=0, microsecond=0)
    created = now - timedelta(days=40)
    finance_id = 0
    with relink.transaction() as s:
        add_account(s, "Acme Analytics", now=created)
        users = {}
        for email, name, role in (
            (ADMIN, "Ada Lovelace", "admin"),
            ("max@acme.test", "Max Mustermann", "member"),
            ("olga@acme.test", "Olga Petrova", "member"),
        ):
            users[email] = add_user(
                s, email=email, name=name, role=role, account="Acme Analytics", now=created
            )
            passwords.set_password(s, email, PASSWORD, now=created)
        for name, type_, mode, owner, status, hours, code, message in CONNECTIONS:
            settings = {"host": "db.acme.internal", "database": "analytics", "username": "relink"}
            if type_ in {"salesforce", "hubspot", "google_analytics"}:
                settings = {}
            if type_ == "api_key":
                settings = {"base_url": "https://billing.acme.test"}
            secrets = {"password": "x"} if type_ in {"postgres", "mysql"} else {"api_key": "x"}
            if type_ not in {"postgres", "mysql", "api_key"}:
                secrets = {"refresh_token": "x"}
            conn = add_connection(
                s,
                relink.vault,
                NewConnection(type_, name, owner, mode, settings, secrets),
                now=created,
            )
            if status != Status.UNCHECKED:
                conn.last_checked_at = now - timedelta(minutes=7)
                _changed(s, conn, Status.UNCHECKED, Status.CONNECTED, created + timedelta(hours=1))
            if hours:
                conn.invalid_since = now - timedelta(hours=hours)
                _changed(s, conn, Status.CONNECTED, status, conn.invalid_since, code, message)
            elif status == Status.UNREACHABLE:
                _changed(
                    s, conn, Status.CONNECTED, status, now - timedelta(minutes=7), code, message
                )
            conn.status = status
            conn.last_error_code, conn.last_error_message = code, message
            if name.startswith("Finance"):
                finance_id = conn.id
                share(s, conn.id, with_email="olga@acme.test", actor=users[ADMIN], now=created)
                _datasets(s, conn.id, now, created)
                audit.record(
                    s,
                    "notification.sent",
                    at=conn.invalid_since + timedelta(hours=26),
                    connection=conn,
                    to=["max@acme.test"],
                )
    return finance_id


def _changed(s, conn, before, after, at, code=None, message=None) -> None:
    audit.record(
        s,
        "connection.status_changed",
        at=at,
        connection=conn,
        before=str(before),
        after=str(after),
        code=code,
    )


def _datasets(s, connection_id: int, now, created) -> None:
    ids = []
    for name, rows in (("Invoices", 1840), ("Payments", 922), ("Refunds", 37)):
        ds = add_dataset(
            s,
            connection_id=connection_id,
            name=name,
            query=f"SELECT * FROM {name.lower()}",
            now=created,
        )
        ds.status = DatasetStatus.OK
        ds.row_count = rows
        ds.last_refreshed_at = now - timedelta(hours=53)
        ids.append(ds.id)
    add_metric(s, name="Monthly revenue", dataset_ids=ids[:2], now=created)
    add_metric(s, name="Refund rate", dataset_ids=[ids[0], ids[2]], now=created)
    s.flush()
    assert s.get(Dataset, ids[0]) is not None


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        relink = make_relink(
            f"sqlite:///{tmp}/relink.db", Path(tmp) / "data", base_url=f"http://127.0.0.1:{port}"
        )
        finance_id = build(relink)
        served = ServedApp(create_app(relink), port).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=[
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                    ],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"{served.url}/login")
                page.fill("#email", ADMIN)
                page.fill("#password", PASSWORD)
                page.click("#sign-in")
                page.wait_for_url(f"{served.url}/connections")
                page.screenshot(path=str(out / "connections.png"), full_page=True)
                page.goto(f"{served.url}/connections/{finance_id}")
                page.screenshot(path=str(out / "connection.png"), full_page=True)
                browser.close()
        finally:
            served.stop()
            relink.close()
    print(f"wrote {out / 'connections.png'} and {out / 'connection.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")

"""The pages in a real browser: Debian's Chromium driven by Playwright, against the app
served by uvicorn, the sandbox OAuth provider and the loopback PostgreSQL.

Chromium is launched by its path (never a downloaded browser). Without it these tests
skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import connectors
from relink import demo
from relink.app import Relink
from relink.connections import NewConnection, add_connection
from relink.datasets import add_dataset
from relink.domain.identity import Identity
from relink.domain.words import Status
from relink.emailing.mailer import OutboxMailer, outbox_folder
from relink.emailing.run import send_due
from relink.models import Connection, Disconnection, ProviderIncident, User
from relink.reconnecting.recheck import recheck
from relink.sweep.run import sweep
from relink.web import create_app
from relink_dev.sandbox import SandboxServer, seed_demo
from tests.integration.conftest import PgAdmin
from tests.integration.oauth_fixtures import add_app_connections, installation_app
from tests.support.web import (
    EMAILS,
    PASSWORD,
    T0,
    ServedApp,
    add_items_dataset,
    build_world,
    free_port,
    make_relink,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def browser_env(home: Path) -> dict[str, str]:
    """Chromium's environment with its config and cache (crash reports, dconf) under
    `home` in the temp directory, not the tester's ~/.config and ~/.cache."""
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }


TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true and the browser tests cannot run: {message}", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            env=browser_env(tmp_path_factory.mktemp("chromium-home")),
        )
        yield chromium
        chromium.close()


@dataclass
class Site:
    url: str
    relink: Relink
    ids: dict[str, int]
    new_db_password: str
    sandbox: SandboxServer | None = None  # the demo site needs none


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    pwcheck_postgres_url: str,
    pwcheck_engine: sa.Engine,
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    relink = make_relink(f"sqlite:///{tmp / 'relink.db'}", tmp / "data", base_url=url)
    admin = PgAdmin(pwcheck_engine)
    sandbox = SandboxServer()
    seed_demo(sandbox.provider)
    sandbox.start()
    served = None
    try:
        role = admin.create_role()
        schema = admin.create_schema(role.name)
        pg = sa.make_url(pwcheck_postgres_url)
        world = build_world(
            relink,
            db_settings={
                "host": pg.host or "127.0.0.1",
                "port": str(pg.port or 5432),
                "database": pg.database or "test",
                "username": role.name,
            },
            db_password=role.password,
            sandbox_url=sandbox.url,
        )
        add_items_dataset(relink, world.ids["Owned DB"], schema)
        world.ids["Sales"] = _broken_salesforce(relink, sandbox.url)
        new_password = role.password + "-new"
        admin.set_password(role.name, new_password)  # the stored password stops working
        served = ServedApp(create_app(relink), port).start()
        yield Site(url, relink, world.ids, new_password, sandbox)
    finally:
        if served is not None:
            served.stop()
        sandbox.stop()
        admin.cleanup()
        relink.close()


def _broken_salesforce(relink: Relink, sandbox_url: str, name: str = "Sales") -> int:
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="salesforce",
                name=name,
                owner=EMAILS["owner"],
                mode="warehouse",
                settings={
                    "authorize_url": f"{sandbox_url}/oauth/authorize",
                    "token_url": f"{sandbox_url}/oauth/token",
                    "introspection_url": f"{sandbox_url}/oauth/introspect",
                    "probe_url": f"{sandbox_url}/api/me",
                    "client_id": "relink-demo",
                },
                secrets={
                    "access_token": "revoked",
                    "refresh_token": "revoked",
                    "client_secret": "relink-demo-secret",
                },
            ),
            now=T0,
        )
        s.flush()
        add_dataset(
            s,
            connection_id=conn.id,
            name="Opportunities",
            query="/api/records?path=opportunities",
            now=T0,
        )
        conn.status = Status.DISCONNECTED
        conn.invalid_since = T0
        conn.last_error_code = "invalid_grant"
        conn.last_error_message = "the refresh token was revoked"
        return conn.id


@pytest.fixture
def page(browser, site: Site) -> Iterator:
    context = browser.new_context(base_url=site.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def sign_in(page, site: Site, who: str) -> None:
    page.goto(f"{site.url}/login")
    page.fill("#email", EMAILS[who])
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(re.compile(r".*/connections$"))


def listed(page) -> set[str]:
    return set(page.locator("#connections a.name").all_inner_texts())


def owner_of(site: Site, connection_id: int) -> str:
    with site.relink.sessions() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        return conn.owner.email


# --- what each user sees -----------------------------------------------------------------


def test_member_sees_only_own_and_shared_connections(page, site: Site) -> None:
    sign_in(page, site, "shared")
    data_tab = page.locator("nav .tab").first
    assert data_tab.inner_text() == "Data"
    assert listed(page) == {"Owned DB"}  # shared with them
    page.click("#sign-out")
    page.wait_for_url(re.compile(r".*/login$"))

    sign_in(page, site, "owner")
    assert listed(page) == {"Owned DB", "Owned API", "Sales"}  # their own
    page.click("#filter-disconnected")  # "show broken"
    assert listed(page) == {"Sales"}
    assert "Disconnected since 2026-11-02 02:00 MST" in page.inner_text("#connections")


def test_admin_sees_every_connection_of_the_account(page, site: Site) -> None:
    sign_in(page, site, "admin")
    assert listed(page) == {"Owned DB", "Owned API", "Sales"}  # not the other account's
    page.click("text=Owned DB")
    page.wait_for_url(re.compile(r".*/connections/\d+$"))
    assert page.inner_text("#fact-created-by").startswith("Owen Owner")
    assert page.inner_text("#reconnect") == "Reconnect"


def test_email_button_link_signed_out_lands_on_the_connection(page, site: Site) -> None:
    target = f"{site.url}/connections/{site.ids['Owned API']}"
    page.goto(target)
    page.wait_for_url(re.compile(r".*/login\?next=.*"))
    page.fill("#email", EMAILS["owner"])
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(target)
    assert page.inner_text("#connection-name") == "Owned API"
    assert page.inner_text("#reconnect") == "Manage Connection"


def test_a_signed_in_visitor_on_a_missing_page_keeps_the_signed_in_header(page, site: Site) -> None:
    sign_in(page, site, "owner")
    response = page.goto(f"{site.url}/connections/999999")
    assert response is not None and response.status == 404
    assert page.inner_text("#signed-in-as").startswith("Owen Owner")
    assert page.locator("#sign-out").is_visible()
    page.click("#nav-data")  # the way back is where it always is
    page.wait_for_url(re.compile(r".*/connections$"))
    assert "Owned DB" in listed(page)


# --- reconnecting ---------------------------------------------------------------------------


def test_reconnect_oauth_through_the_consent_page(page, site: Site) -> None:
    conn_id = site.ids["Sales"]
    sign_in(page, site, "owner")
    page.goto(f"{site.url}/connections/{conn_id}")
    assert "Disconnected since" in page.inner_text("#connection-status")
    page.click("#reconnect")  # "Manage Connection": a warehouse source
    page.click("#continue")
    page.wait_for_selector("#allow")  # the sandbox provider's consent page
    assert page.url.startswith(site.url.rsplit(":", 1)[0]) and "/oauth/authorize" in page.url
    # the scopes the Salesforce connector asked for, one by one
    assert page.locator("#scopes li").all_inner_texts() == ["api", "refresh_token"]
    page.click("#allow")
    page.wait_for_url(f"{site.url}/connections/{conn_id}")
    assert page.inner_text("#connection-status") == "Connected"
    flash = page.inner_text("#flash")
    assert "Reconnected" in flash and "Datasets refreshed: 1 of 1." in flash
    assert "code=" not in page.url and "state=" not in page.url


def test_a_reconnect_as_another_account_is_confirmed_on_its_own_page(page, site: Site) -> None:
    assert site.sandbox is not None
    conn_id = _broken_salesforce(site.relink, site.sandbox.url, name="Marketing")
    with site.relink.transaction() as s:
        s.get(Connection, conn_id).identity = Identity("max@acme.test", "max@acme.test")
    sign_in(page, site, "owner")
    page.goto(f"{site.url}/connections/{conn_id}")
    assert page.inner_text("#fact-connected-as") == "max@acme.test"
    page.click("#reconnect")
    page.click("#continue")
    page.fill("#username", "ann@acme.test")  # another account at the provider
    page.click("#allow")

    page.wait_for_selector("#confirm-replace")
    assert "code=" not in page.url and "state=" not in page.url
    page.reload()  # the confirm page is a page of its own: a reload asks again
    assert page.inner_text("#replacement-line") == (
        "This replaces max@acme.test with ann@acme.test."
    )
    with site.relink.sessions() as s:  # not yet: nothing changed
        held = s.get(Connection, conn_id)
        assert (held.identity_label, held.status) == ("max@acme.test", Status.DISCONNECTED)
    page.click("#confirm-replace")

    page.wait_for_url(f"{site.url}/connections/{conn_id}")
    assert page.inner_text("#connection-status") == "Connected"
    assert "Connected as ann@acme.test" in page.inner_text("#flash")
    assert page.inner_text("#fact-connected-as") == "ann@acme.test"
    history = page.inner_text("#history")
    assert "account: ann@acme.test; account before: max@acme.test" in history


def test_reconnect_postgres_with_a_new_password(page, site: Site) -> None:
    conn_id = site.ids["Owned DB"]
    sign_in(page, site, "shared")
    page.goto(f"{site.url}/connections/{conn_id}")
    page.click("#reconnect")
    assert page.get_attribute("#field-password", "type") == "password"
    assert page.input_value("#field-password") == ""

    page.fill("#field-password", "not-the-new-password")
    page.click("#submit-reconnect")
    error = page.inner_text("#reconnect-error")
    assert "The source refused these credentials." in error and "28P01" in error
    assert page.input_value("#field-password") == ""  # never echoed back
    assert owner_of(site, conn_id) == EMAILS["owner"]

    page.fill("#field-password", site.new_db_password)
    page.click("#submit-reconnect")
    page.wait_for_url(f"{site.url}/connections/{conn_id}")
    assert page.inner_text("#connection-status") == "Connected"
    assert "Datasets refreshed: 1 of 1." in page.inner_text("#flash")
    assert page.inner_text("#fact-created-by").startswith("Sam Shared")
    assert site.new_db_password not in page.content()
    assert owner_of(site, conn_id) == EMAILS["shared"]


# --- an installation problem -----------------------------------------------------------------


def test_a_misconfigured_connection_tells_admins_what_to_fix_and_members_to_wait(
    page, site: Site
) -> None:
    """The installation's Salesforce app secret was rotated at the provider, not in the
    settings: a real check finds it; the admin is told which settings to fix, the owner
    (a member) that the connection waits for an administrator."""
    assert site.sandbox is not None
    provider, app_id = site.sandbox.provider, "relink-salesforce-app"
    provider.register_client(app_id, "the-rotated-app-secret", [f"{site.url}/oauth/callback"])
    (conn_id,) = add_app_connections(
        site.relink,
        provider,
        site.sandbox.url,
        app_id=app_id,
        owner=EMAILS["owner"],
        names=["Forecasts"],
        now=T0,
    )
    site.relink.settings.oauth = installation_app(app_id, "the-old-app-secret")
    try:
        check = sweep(site.relink, now=datetime.now(UTC), connection_ids=[conn_id])
        with ThreadPoolExecutor(1) as elsewhere:  # Playwright's loop runs in this thread
            checked = elsewhere.submit(asyncio.run, check).result()
        assert checked.outcomes["misconfigured"] == 1 and checked.opened == 0

        sign_in(page, site, "admin")
        page.goto(f"{site.url}/connections/{conn_id}")
        assert page.inner_text("#connection-status") == "Needs an admin"
        advice = page.inner_text("#misconfigured")
        assert "needs an administrator: you" in advice and "reconnecting cannot help" in advice
        assert "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET" in advice
        assert "the-old-app-secret" not in page.content()
        page.click("#sign-out")
        page.wait_for_url(re.compile(r".*/login$"))

        sign_in(page, site, "owner")
        page.goto(f"{site.url}/connections/{conn_id}")
        waiting = page.inner_text("#misconfigured")
        assert "Waiting for an administrator." in waiting and "nothing for you to do" in waiting
        assert "RELINK_OAUTH" not in waiting
        assert "waiting for an administrator" in page.inner_text("#fact-last-error")
        assert page.inner_text("#fact-invalid-since") == "—"  # not disconnected
    finally:
        site.relink.settings.oauth = {}
        with site.relink.transaction() as s:  # the other tests' lists stay as they were
            s.delete(s.get(Connection, conn_id))


# --- the Emails page -------------------------------------------------------------------------


def test_an_admin_reads_a_disconnection_email_on_the_emails_page(page, site: Site) -> None:
    """The email the 07:00 run wrote to the outbox, as its owner reads it: the HTML in its
    sandboxed frame, the plain text beside it; members have no Emails tab."""
    now = datetime.now(UTC)
    with site.relink.transaction() as s:
        conn = add_connection(
            s,
            site.relink.vault,
            NewConnection(
                type="postgres",
                name="Billing DB",
                owner=EMAILS["owner"],
                settings={"host": "127.0.0.1", "port": "9", "database": "b", "username": "b"},
                secrets={"password": "billing-secret-pw"},
            ),
            now=now - timedelta(days=3),
        )
        s.flush()
        conn_id = conn.id
        s.add(Disconnection(connection_id=conn_id, started_at=now - timedelta(hours=25)))
    mailer = OutboxMailer(outbox_folder(site.relink.settings))
    try:
        with ThreadPoolExecutor(1) as elsewhere:  # Playwright's loop runs in this thread
            run = elsewhere.submit(send_due, site.relink, now=now, mailer=mailer).result()
        assert run.counts.get("outbox") == 1

        sign_in(page, site, "admin")
        page.click("#nav-emails")
        page.wait_for_url(re.compile(r".*/emails$"))
        row = page.locator("#emails tbody tr", has_text="Billing DB")
        assert "In the outbox" in row.inner_text() and EMAILS["owner"] in row.inner_text()
        row.locator("a.name").click()
        page.wait_for_url(re.compile(r".*/emails/\d+$"))
        assert page.inner_text("#email-state") == "In the outbox"
        assert "Billing DB" in page.inner_text("#email-text")
        frame = page.frame_locator("#email-html")
        assert "Billing DB" in frame.locator("body").inner_text()
        assert "billing-secret-pw" not in page.content()
        page.click("#sign-out")
        page.wait_for_url(re.compile(r".*/login$"))

        sign_in(page, site, "owner")
        assert page.locator("#nav-emails").count() == 0
    finally:
        with site.relink.transaction() as s:  # the other tests' lists stay as they were
            s.delete(s.get(Connection, conn_id))


# --- a phone and a desktop ------------------------------------------------------------------

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
BAR_ROW_PX = 52  # one row of the top bar at a desktop width

LAYOUT = """() => {
  const bar = document.querySelector('.topbar').getBoundingClientRect();
  const items = [...document.querySelectorAll('.topbar .nav > *')].map(e => {
    const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, text: e.innerText};
  });
  const boxes = [...document.querySelectorAll('table.table')].map(t => {
    const box = t.parentElement;
    const before = box.scrollLeft;
    box.scrollLeft = 10000;
    const scrolled = box.scrollLeft;
    box.scrollLeft = before;
    return {
      id: t.id,
      overflow: getComputedStyle(box).overflowX,
      right: box.getBoundingClientRect().right,
      tableWidth: t.scrollWidth,
      boxWidth: box.clientWidth,
      scrolled: scrolled,
    };
  });
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    bar: {top: bar.top, bottom: bar.bottom, height: bar.height},
    items: items,
    boxes: boxes,
  };
}"""


@pytest.mark.parametrize("size", SIZES)
def test_the_pages_fit_a_phone_and_a_desktop(browser, site: Site, size: str) -> None:
    """No page-level sideways scroll at 390 px: a wide table scrolls inside its own box,
    and the top bar keeps every item inside it in at most two rows, even a long name."""
    width, height = SIZES[size]
    with site.relink.transaction() as s:
        admin = s.scalar(sa.select(User).where(User.email == EMAILS["admin"]))
        assert admin is not None
        admin.name = "Ada Augusta King, Countess of Lovelace"
    context = browser.new_context(base_url=site.url, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, site, "admin")  # the most tabs: Data, Emails, Connectors
        pages = {
            "/connections": "connections",
            f"/connections/{site.ids['Owned DB']}": "history",
            f"/connections/{site.ids['Sales']}": None,  # broken: the notice, the error
            f"/connections/{site.ids['Owned DB']}/reconnect": None,
            "/emails": None,  # its table when there are emails, else the empty note
            "/connectors": "kinds",  # a row per kind, the fields folded below
        }
        for path, table in pages.items():
            page.goto(f"{site.url}{path}")
            shown = page.evaluate(LAYOUT)
            assert shown["scrollWidth"] <= shown["innerWidth"], (size, path, shown)
            bar = shown["bar"]
            assert bar["height"] < 2.2 * BAR_ROW_PX, (size, path, bar)
            for item in shown["items"]:  # nothing spills out of the bar or off the screen
                assert bar["top"] <= item["top"] and item["bottom"] <= bar["bottom"], item
                assert item["left"] >= 0 and item["right"] <= width, item
            for box in shown["boxes"]:
                assert box["overflow"] in {"auto", "scroll"}, (path, box)
                assert box["right"] <= width, (path, box)
                wider = box["tableWidth"] > box["boxWidth"]
                assert (box["scrolled"] > 0) == wider, (path, box)  # scrolls when needed
            if table is not None:
                (box,) = (b for b in shown["boxes"] if b["id"] == table)
                if size == "phone":  # six columns do not fit 390 px: the box scrolls
                    assert box["tableWidth"] > box["boxWidth"] and box["scrolled"] > 0, box
                else:
                    assert box["scrolled"] == 0, box
    finally:
        context.close()
        with site.relink.transaction() as s:  # the other tests see the name they expect
            admin = s.scalar(sa.select(User).where(User.email == EMAILS["admin"]))
            assert admin is not None
            admin.name = "Ada Admin"


def test_a_provider_outage_is_one_banner_that_fits_a_phone(browser, site: Site) -> None:
    """An open provider incident is one line above the Connections list, counted over the
    viewer's connections, inside a 390 px screen; a viewer none of whose connections
    meets it sees none."""
    api = site.ids["Owned API"]
    with site.relink.transaction() as s:
        conn = s.get(Connection, api)
        assert conn is not None
        before = (conn.last_outcome, conn.last_outcome_code)
        conn.last_outcome, conn.last_outcome_code = "unreachable", "http_503"
        since = datetime(2026, 11, 2, 21, 15, tzinfo=UTC)  # 14:15 MST
        incident = ProviderIncident(
            provider="api_key",
            outcome="unreachable",
            code="http_503",
            failed=1,
            checked=1,
            started_at=since,
            updated_at=since,
        )
        s.add(incident)
    context = browser.new_context(base_url=site.url, viewport={"width": 390, "height": 844})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, site, "owner")
        banner = page.locator("#incident-api_key")
        assert banner.is_visible()
        assert banner.inner_text().startswith(
            "HTTP API (API key): 1 of 1 connections unreachable with http_503 since "
        )
        assert "likely a provider outage, no connection was marked broken" in banner.inner_text()
        shown = page.evaluate(LAYOUT)
        assert shown["scrollWidth"] <= shown["innerWidth"], shown
        box = banner.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        page.click("#sign-out")
        page.wait_for_url(re.compile(r".*/login$"))
        sign_in(page, site, "shared")  # sees only Owned DB
        assert page.locator("[id^=incident-]").count() == 0
    finally:
        context.close()
        with site.relink.transaction() as s:
            s.execute(sa.delete(ProviderIncident))
            conn = s.get(Connection, api)
            assert conn is not None
            conn.last_outcome, conn.last_outcome_code = before


def test_the_connectors_page_is_a_summary_with_each_kind_folded_below(page, site: Site) -> None:
    """One row per kind (what it needs, how it is checked); each kind's fields are folded
    and open from its row. Every kind's field table, all shown, was 13,083 px at 1280."""
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{site.url}/connectors")
    kinds = list(connectors.all_connectors())
    rows = page.locator("#kinds tbody tr")
    assert rows.count() == len(kinds)
    assert "connect and SELECT 1" in rows.filter(has_text="PostgreSQL").inner_text()
    assert page.evaluate("document.documentElement.scrollHeight") < 2_500
    assert not page.locator("#salesforce table").is_visible()  # folded

    page.locator("#kinds").get_by_role("link", name="MySQL / MariaDB").click()
    page.wait_for_url(f"{site.url}/connectors?kind=mysql#mysql")
    assert page.locator("#mysql").get_attribute("open") is not None
    assert "username" in page.locator("#mysql table").inner_text()
    assert not page.locator("#salesforce table").is_visible()  # only the one asked for

    page.goto(f"{site.url}/connectors?kind=sharepoint#sharepoint")
    assert "no connector kind “sharepoint”" in page.inner_text("#unknown-kind")


TOP_BAR = "getComputedStyle(document.querySelector('.topbar')).backgroundColor"


def test_the_sandbox_says_what_it_is_and_its_consent_page_shows_the_scopes_asked(
    page, site: Site
) -> None:
    """The sandbox's root (the URL `make run` prints) says what it is; its consent page
    wears Relink's stylesheet and lists each scope asked for, saying which it leaves out."""
    assert site.sandbox is not None
    sandbox = site.sandbox.url
    page.goto(f"{site.url}/connectors")
    relink_bar = page.evaluate(TOP_BAR)

    page.goto(f"{sandbox}/")
    assert "sandbox OAuth 2.0 provider" in page.inner_text("#what")
    assert "/oauth/authorize" in page.inner_text("#endpoints")
    assert "relink-demo" in page.inner_text("#clients")
    assert page.evaluate(TOP_BAR) == relink_bar

    page.goto(
        f"{sandbox}/oauth/authorize?response_type=code&client_id=relink-demo"
        "&redirect_uri=http://127.0.0.1:8000/oauth/callback&scope=api%20calendar.write"
    )
    assert page.evaluate(TOP_BAR) == relink_bar
    assert page.inner_text("#client-id") == "relink-demo"
    api, other = page.locator("#scopes li").all_inner_texts()  # calendar.write: not the demo's
    assert api == "api" and other.startswith("calendar.write") and "will not be granted" in other
    allow = page.locator("#allow").evaluate("e => getComputedStyle(e).backgroundColor")
    assert allow == "rgb(31, 111, 235)"  # Relink's primary button


# --- the demo, as `make run` shows it ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory, mariadb_url: str) -> Iterator[Site]:
    """The demo account, its Finance connection broken as the first sweep of `relink run`
    leaves it (a MariaDB user that does not exist)."""
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    relink = make_relink(f"sqlite:///{tmp / 'relink.db'}", tmp / "data", base_url=url)
    with relink.transaction() as s:
        demo.seed(s, relink.vault, now=T0)
        demo.set_demo_passwords(s, now=T0)
        finance = s.scalar(sa.select(Connection.id).where(Connection.name == demo.FINANCE))
    assert finance is not None
    with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        check = recheck(relink, finance, requested_by=demo.MEMBER[0])
        checked = thread.submit(asyncio.run, check).result()
    assert (checked.status, checked.outcome) == (Status.DISCONNECTED, "auth_failed")
    served = ServedApp(create_app(relink), port).start()
    try:
        yield Site(url, relink, {demo.FINANCE: finance}, "")
    finally:
        served.stop()
        relink.close()


def test_the_demo_finance_connection_is_fixed_from_its_page(browser, demo_site: Site) -> None:
    context = browser.new_context(base_url=demo_site.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    conn_id = demo_site.ids[demo.FINANCE]
    page.goto(f"{demo_site.url}/login")
    page.fill("#email", demo.MEMBER[0])
    page.fill("#password", demo.DEMO_PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(re.compile(r".*/connections$"))
    page.click(f"text={demo.FINANCE}")
    assert "Disconnected since" in page.inner_text("#connection-status")
    page.click("#reconnect")
    # what the owner can fix, pre-filled with what the connection uses now
    assert page.input_value("#field-username") == "relink_demo_finance"
    assert (page.input_value("#field-host"), page.input_value("#field-port")) == (
        "127.0.0.1",
        "3306",
    )
    assert page.input_value("#field-password") == ""

    page.fill("#field-username", "relink_demo_nobody")
    page.click("#submit-reconnect")
    error = page.inner_text("#reconnect-error")
    assert "The source refused these credentials." in error
    assert "access denied for this user name and password (the server sent" in error
    assert page.input_value("#field-username") == "relink_demo_nobody"  # as typed

    page.fill("#field-username", demo.FINANCE_FIX["username"])
    page.fill("#field-password", demo.FINANCE_FIX["password"])
    page.click("#submit-reconnect")
    page.wait_for_url(f"{demo_site.url}/connections/{conn_id}")
    assert page.inner_text("#connection-status") == "Connected"
    assert "Datasets refreshed: 1 of 1." in page.inner_text("#flash")
    history = page.inner_text("#history")
    assert "Reconnect failed" in history and "relink_demo_finance → relink_demo_nobody" in history
    assert f"Reconnected\t{demo.MEMBER[1]}" in history
    assert "username relink_demo_finance → root" in history
    context.close()

"""The CLI end to end: every command on a real database, and bad input changes nothing."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from relink.app import Relink
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.models import AuditEvent, Connection, Dataset
from relink.settings import Settings
from relink.vault import Vault, generate_key
from tests.support import app_db


class Cli:
    def __init__(self, settings):
        self.settings = settings
        self.env = {
            "RELINK_DATABASE_URL": settings.database_url,
            "RELINK_DATA_DIR": str(settings.data_dir),
            "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
            "RELINK_BASE_URL": settings.base_url,
        }
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict | None = None):
        reset_app()
        try:
            return self.runner.invoke(
                cli_app, list(args), input=input, env={**self.env, **(env or {})}
            )
        finally:
            reset_app()

    def ok(self, *args: str, **kw):
        result = self(*args, **kw)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def cli(relink_app, settings):
    return Cli(settings)


@pytest.fixture
def account(cli):
    add_accounts(cli)


def add_accounts(cli):
    """Acme (Ann its admin, Bob, Cid) and Other (Eve its admin)."""
    cli.ok("accounts", "add", "Acme")
    cli.ok(
        "users",
        "add",
        "ann@acme.test",
        "--name",
        "Ann Admin",
        "--role",
        "admin",
        "--account",
        "Acme",
    )
    cli.ok("users", "add", "bob@acme.test", "--name", "Bob", "--account", "Acme")
    cli.ok("users", "add", "cid@acme.test", "--name", "Cid", "--account", "Acme")
    cli.ok("accounts", "add", "Other")
    cli.ok(
        "users", "add", "eve@other.test", "--name", "Eve", "--role", "admin", "--account", "Other"
    )


def add_pg(cli, name="Warehouse", owner="bob@acme.test", password="pw-marker-1"):
    return cli(
        "connections",
        "add",
        "postgres",
        "--name",
        name,
        "--owner",
        owner,
        "--set",
        "host=db.internal",
        "--set",
        "database=sales",
        "--set",
        "username=reader",
        "--secret",
        "password",
        input=password + "\n",
    )


def snapshot(relink_app):
    """Every row of the tables a command may write."""
    with relink_app.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1")).all()
            for t in (
                "accounts",
                "users",
                "connections",
                "connection_shares",
                "datasets",
                "metrics",
                "audit_events",
            )
        }


def test_help_lists_the_commands(cli):
    out = cli.ok("--help").stdout
    for group in ("db", "config", "keys", "users", "connections", "datasets", "metrics", "demo"):
        assert group in out


def test_commands_refuse_an_unmigrated_database(settings, tmp_path):
    fresh = Cli(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/empty.db"}))
    result = fresh("connections", "list", "--as", "x@y.test")
    assert result.exit_code == 1
    assert "run `relink db upgrade`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_setting_is_one_line_naming_the_variable_not_its_value(cli, account):
    for command in (
        ("status",),
        ("check",),
        ("config", "show"),
        ("connections", "list", "--as", "ann@acme.test"),
    ):
        result = cli(*command, env={"RELINK_CHECK_TIMEOUT": "ten-marker"})
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines() == [
            "error: bad setting: RELINK_CHECK_TIMEOUT: Input should be a valid number, "
            "unable to parse string as a number"
        ]
        assert "ten-marker" not in result.output


def test_every_command_turns_an_expected_failure_into_one_line():
    """A command that skips `handle_errors` would print a traceback for a bad setting (as
    `config show` once did): every leaf of the command tree is wrapped."""
    from relink.cli import registered
    from relink.cli._common import handle_errors

    guard = handle_errors(lambda: None).__code__

    def guarded(func):
        while func is not None:
            if func.__code__ is guard:
                return True
            func = getattr(func, "__wrapped__", None)
        return False

    def leaves(command, path):
        children = getattr(command, "commands", None)
        if children is None:
            yield path, command
            return
        for name, child in children.items():
            yield from leaves(child, (*path, name))

    unwrapped = [
        " ".join(path)
        for name, command in registered().items()
        for path, leaf in leaves(command, (name,))
        if not guarded(leaf.callback)
    ]
    assert unwrapped == []


def test_add_connection_stores_the_secret_encrypted_and_never_prints_it(cli, account, relink_app):
    result = add_pg(cli)
    assert result.exit_code == 0, result.output
    assert "pw-marker-1" not in result.output
    with relink_app.sessions() as session:
        conn = session.scalar(sa.select(Connection))
        assert "pw-marker-1" not in conn.credentials
        assert relink_app.vault.decrypt(conn.credentials, connection="1") == {
            "password": "pw-marker-1"
        }
        assert conn.settings == {
            "host": "db.internal",
            "database": "sales",
            "username": "reader",
            "port": "5432",
            "sslmode": "prefer",
        }
        assert conn.status == "unchecked" and conn.owner.email == "bob@acme.test"
        assert session.scalar(sa.select(AuditEvent.action)) == "connection.created"
    shown = cli.json("connections", "show", "1", "--as", "bob@acme.test")
    assert "pw-marker-1" not in json.dumps(shown)


def test_secret_from_environment_variable(cli, account, relink_app):
    cli.ok(
        "connections",
        "add",
        "api_key",
        "--name",
        "Billing",
        "--owner",
        "bob@acme.test",
        "--set",
        "base_url=https://api.example.test",
        "--secret-env",
        "api_key=BILLING_KEY",
        env={"BILLING_KEY": "key-marker-2"},
    )
    with relink_app.sessions() as session:
        token = session.scalar(sa.select(Connection.credentials))
    assert relink_app.vault.decrypt(token, connection="1") == {"api_key": "key-marker-2"}


@pytest.fixture(scope="module")
def refusing_world(tmp_path_factory):
    """The accounts and Bob's "Warehouse" on SQLite, built once for the bad-input and
    bad-import cases: each is refused and writes nothing (each test proves it), so they
    can share it."""
    tmp = tmp_path_factory.mktemp("cli_refusals")
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp / 'relink.db'}",
        data_dir=tmp / "data",
        secret_keys=generate_key(),
        base_url="http://relink.test",
    )
    app = Relink(settings)
    app_db.migrate(app.engine)
    try:
        cli = Cli(settings)
        add_accounts(cli)
        assert add_pg(cli).exit_code == 0
        yield cli, app
    finally:
        app.close()


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (
            ["connections", "add", "postgress", "--name", "X", "--owner", "bob@acme.test"],
            None,
            "unknown connector type 'postgress'",
        ),
        (
            [
                "connections",
                "add",
                "postgres",
                "--name",
                "X",
                "--owner",
                "bob@acme.test",
                "--set",
                "host=h",
                "--set",
                "username=u",
                "--secret",
                "password",
            ],
            "pw\n",
            "missing field 'database'",
        ),
        (
            [
                "connections",
                "add",
                "postgres",
                "--name",
                "X",
                "--owner",
                "bob@acme.test",
                "--set",
                "host=h",
                "--set",
                "database=d",
                "--set",
                "username=u",
                "--set",
                "password=oops",
            ],
            None,
            "'password' is a secret",
        ),
        (
            [
                "connections",
                "add",
                "postgres",
                "--name",
                "X",
                "--owner",
                "bob@acme.test",
                "--set",
                "host=h",
                "--set",
                "database=d",
                "--set",
                "username=u",
            ],
            None,
            "missing secret 'password'",
        ),
        (
            [
                "connections",
                "add",
                "postgres",
                "--name",
                "X",
                "--owner",
                "nobody@acme.test",
                "--set",
                "host=h",
                "--set",
                "database=d",
                "--set",
                "username=u",
                "--secret",
                "password",
            ],
            "pw\n",
            "unknown user 'nobody@acme.test'",
        ),
        (
            [
                "connections",
                "add",
                "postgres",
                "--name",
                "X",
                "--owner",
                "bob@acme.test",
                "--set",
                "hots=h",
                "--set",
                "database=d",
                "--set",
                "username=u",
                "--secret",
                "password",
            ],
            "pw\n",
            "unknown field 'hots'",
        ),
        (
            ["users", "add", "zed@acme.test", "--name", "Zed", "--account", "Nope"],
            None,
            "unknown account 'Nope'",
        ),
        (["users", "list", "--account", "Nope"], None, "unknown account 'Nope'"),
        (["accounts", "add", "A" * 201], None, "an account name is one line of at most 200"),
        (
            ["users", "add", "zed@acme.test", "--name", "Zed\nAdmin", "--account", "Acme"],
            None,
            "a user's name is one line",
        ),
        (
            [
                "users",
                "add",
                "zed@acme.test\nbcc:eve@other.test",
                "--name",
                "Z",
                "--account",
                "Acme",
            ],
            None,
            "is not an email address",
        ),
        (
            ["datasets", "add", "--connection", "1", "--name", "Ord\rers", "--query", "SELECT 1"],
            None,
            "a dataset name is one line",
        ),
        (
            ["metrics", "add", "--name", "M" * 201, "--dataset", "1"],
            None,
            "a metric name is one line of at most 200",
        ),
        (
            ["users", "add", "bob@acme.test", "--name", "Bob 2", "--account", "Acme"],
            None,
            "already exists",
        ),
        (
            ["connections", "share", "1", "--with", "cid@acme.test", "--as", "cid@acme.test"],
            None,
            "no connection 1 visible to you",
        ),
        (
            ["connections", "share", "1", "--with", "eve@other.test", "--as", "ann@acme.test"],
            None,
            "belongs to another account",
        ),
        (
            ["datasets", "add", "--connection", "99", "--name", "D", "--query", "SELECT 1"],
            None,
            "unknown connection 99",
        ),
        (
            ["connections", "show", "1", "--as", "eve@other.test"],
            None,
            "no connection 1 visible to you",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(refusing_world, args, stdin, expected):
    cli, relink_app = refusing_world
    before = snapshot(relink_app)
    result = cli(*args, input=stdin)
    assert result.exit_code == 1, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert snapshot(relink_app) == before


@pytest.mark.both_backends  # a unique constraint's error differs by backend
def test_duplicate_connection_name_is_refused(cli, account, relink_app):
    assert add_pg(cli).exit_code == 0
    before = snapshot(relink_app)
    result = add_pg(cli, owner="ann@acme.test")
    assert result.exit_code == 1
    assert "a connection named 'Warehouse' already exists" in result.stderr
    assert snapshot(relink_app) == before


def test_usage_errors_exit_2(cli):
    assert cli("connections", "list").exit_code == 2
    assert cli("connections", "list", "--as", "a@b.test", "--status", "weird").exit_code == 2


def test_visibility_admin_all_member_own_and_shared_other_account_none(cli, account):
    add_pg(cli, "Bob's", owner="bob@acme.test")
    add_pg(cli, "Ann's", owner="ann@acme.test")
    add_pg(cli, "Cid's", owner="cid@acme.test")
    cli.ok("connections", "share", "3", "--with", "bob@acme.test", "--as", "cid@acme.test")

    def names(email):
        return [c["name"] for c in cli.json("connections", "list", "--as", email)]

    assert names("ann@acme.test") == ["Bob's", "Ann's", "Cid's"]
    assert names("bob@acme.test") == ["Bob's", "Cid's"]
    assert names("cid@acme.test") == ["Cid's"]
    assert names("eve@other.test") == []
    assert (
        cli.json("connections", "list", "--as", "ann@acme.test", "--status", "disconnected") == []
    )


def test_show_lists_datasets_and_metrics_with_the_connections_error(cli, account, relink_app):
    add_pg(cli)
    cli.ok("datasets", "add", "--connection", "1", "--name", "Orders", "--query", "SELECT 1")
    cli.ok("metrics", "add", "--name", "Revenue", "--dataset", "1")
    with relink_app.transaction() as session:
        conn = session.get(Connection, 1)
        conn.status = "disconnected"
        conn.last_error_message = "28P01: password authentication failed"
    shown = cli.json("connections", "show", "1", "--as", "bob@acme.test")
    assert [d["name"] for d in shown["datasets"]] == ["Orders"]
    assert "28P01" in shown["datasets"][0]["error"]
    assert shown["metrics"][0]["name"] == "Revenue"
    assert "28P01" in shown["metrics"][0]["error"]
    table = cli.ok("connections", "show", "1", "--as", "bob@acme.test").stdout
    assert "Revenue" in table and "Orders" in table


IMPORT = """
connections:
  - type: postgres
    name: Imported PG
    owner: bob@acme.test
    settings: {host: db1, port: 6432, database: sales, username: reader}
    secrets:
      password: {env: PG_PW}
  - type: api_key
    name: Imported API
    owner: ann@acme.test
    mode: warehouse
    settings: {base_url: "https://api.example.test"}
    secrets:
      api_key: {env: API_KEY}
"""


def test_import_many_connections_with_secrets_from_the_environment(
    cli, account, relink_app, tmp_path
):
    path = tmp_path / "conns.yaml"
    path.write_text(IMPORT)
    cli.ok("connections", "import", str(path), env={"PG_PW": "pw-3", "API_KEY": "key-3"})
    rows = cli.json("connections", "list", "--as", "ann@acme.test")
    assert [(r["name"], r["mode"]) for r in rows] == [
        ("Imported PG", "direct"),
        ("Imported API", "warehouse"),
    ]
    with relink_app.sessions() as session:
        pg = session.scalar(sa.select(Connection).where(Connection.name == "Imported PG"))
        assert pg.settings["port"] == "6432"
        assert relink_app.vault.decrypt(pg.credentials, connection="x") == {"password": "pw-3"}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("connections: [\n  - {type: postgres", {}, "not valid YAML"),
        ("just a string", {}, "Input should be a valid dictionary"),
        (IMPORT, {"PG_PW": "x"}, "environment variable API_KEY, which is not set"),
        (
            IMPORT.replace("{env: PG_PW}", "plain-text"),
            {"API_KEY": "k"},
            "secrets must be written as {env: VARIABLE}",
        ),
        (
            IMPORT.replace("type: api_key", "type: nope"),
            {"PG_PW": "x", "API_KEY": "k"},
            "connection 2 ('Imported API'): unknown connector type 'nope'",
        ),
    ],
)
def test_a_bad_import_file_writes_nothing(refusing_world, tmp_path, text, env, expected):
    cli, relink_app = refusing_world
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = snapshot(relink_app)
    result = cli("connections", "import", str(path), env=env)
    assert result.exit_code == 1, result.output
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(relink_app) == before


def test_keys_rotate_reencrypts_everything_and_the_old_key_can_go(
    cli, account, relink_app, settings
):
    add_pg(cli, "A")
    add_pg(cli, "B", password="pw-b")
    old = settings.secret_keys.get_secret_value()
    new = generate_key()
    cli.ok("keys", "rotate", env={"RELINK_SECRET_KEYS": f"{new},{old}"})
    only_new = Vault([new])
    with relink_app.sessions() as session:
        secrets = [
            only_new.decrypt(c.credentials, connection=c.name)
            for c in session.scalars(sa.select(Connection).order_by(Connection.id))
        ]
    assert secrets == [{"password": "pw-marker-1"}, {"password": "pw-b"}]


def test_keys_rotate_with_a_wrong_key_changes_nothing(cli, account, relink_app):
    add_pg(cli)
    before = snapshot(relink_app)
    wrong = generate_key()
    result = cli("keys", "rotate", env={"RELINK_SECRET_KEYS": wrong})
    assert result.exit_code == 1
    assert "credentials of connection 1 ('Warehouse') do not decrypt" in result.stderr
    assert snapshot(relink_app) == before


def test_keys_rotate_with_the_key_file_adds_a_new_key_first(cli, account, relink_app, settings):
    env = {"RELINK_SECRET_KEYS": ""}
    cli.ok(
        "connections",
        "add",
        "api_key",
        "--name",
        "K",
        "--owner",
        "bob@acme.test",
        "--set",
        "base_url=https://x.test",
        "--secret-env",
        "api_key=K1",
        env={**env, "K1": "v1"},
    )
    keys_before = settings.key_file.read_text().split()
    cli.ok("keys", "rotate", env=env)
    keys_after = settings.key_file.read_text().split()
    assert keys_after[1:] == keys_before and len(keys_after) == 2
    with relink_app.sessions() as session:
        token = session.scalar(sa.select(Connection.credentials))
    assert Vault(keys_after[:1]).decrypt(token, connection="K") == {"api_key": "v1"}


def test_config_show_masks_secrets(cli, settings):
    out = cli.ok("config", "show", "--json", env={"RELINK_SENDGRID_API_KEY": "SG.marker"}).stdout
    assert "SG.marker" not in out and settings.secret_keys.get_secret_value() not in out
    values = json.loads(out)
    assert values["sendgrid_api_key"] == "**********"
    assert values["base_url"] == "http://relink.test"


def test_demo_seed_is_idempotent(cli, relink_app):
    cli.ok("demo", "seed")
    before = snapshot(relink_app)
    assert "already present" in cli.ok("demo", "seed").stdout
    assert snapshot(relink_app) == before
    rows = cli.json("connections", "list", "--as", "ada@demo.relink.test")
    assert {r["type"] for r in rows} >= {"postgres", "mysql", "salesforce", "api_key"}
    member_rows = cli.json("connections", "list", "--as", "max@demo.relink.test")
    assert len(member_rows) < len(rows)
    with relink_app.sessions() as session:
        assert session.scalar(sa.select(sa.func.count(Dataset.id))) == len(rows)


def test_the_demo_has_a_disconnection_past_24_hours_and_says_it_is_demo_data(cli):
    """So the first email run of `make run` has its one email to send."""
    cli.ok("demo", "seed")
    due = cli.json("notify", "--dry-run")
    assert [d["connection"] for d in due["emails"]] == ["Support (Salesforce sandbox)"]
    assert due["emails"][0]["to"] == ["max@demo.relink.test"]
    (support,) = [
        r
        for r in cli.json("connections", "list", "--as", "ada@demo.relink.test")
        if r["name"] == "Support (Salesforce sandbox)"
    ]
    assert support["status"] == "disconnected"
    assert (support["last_outcome"], support["last_outcome_code"]) == (
        "auth_failed",
        "invalid_grant",
    )
    trail = cli.json("audit", "--connection", str(support["id"]))
    assert any(
        "demo data: broken since" in (e.get("details") or {}).get("message", "") for e in trail
    )


def test_every_table_command_takes_wide_and_json_is_unchanged(cli, account):
    """--wide prints every value in full (a table wider than an 80-column terminal);
    --json is the same data with or without it."""
    add_pg(cli)
    narrow = cli.ok("audit", env={"COLUMNS": "80"}).stdout
    full = cli.ok("audit", "--wide", env={"COLUMNS": "80"}).stdout
    assert max(map(len, narrow.splitlines())) <= 80 < max(map(len, full.splitlines()))
    assert "┃ details" in full  # a table, not cards
    for command in (
        ("status",),
        ("connections", "list", "--as", "ann@acme.test"),
        ("connectors", "list"),
        ("outbox", "list"),
        ("users", "list"),
        ("accounts", "list"),
        ("config", "show"),
    ):
        cli.ok(*command, "--wide")
        with_wide, without = cli.json(*command, "--wide"), cli.json(*command)
        if isinstance(with_wide, dict):  # `status` says when it looked
            with_wide.pop("at", None), without.pop("at", None)
        assert with_wide == without, command


def test_connectors_list_and_show(cli):
    types = {c["type"] for c in cli.json("connectors", "list")}
    assert {
        "postgres",
        "mysql",
        "api_key",
        "salesforce",
        "google_analytics",
        "hubspot",
        "quickbooks",
        "microsoft_graph",
    } <= types
    pg = cli.json("connectors", "show", "postgres")
    assert [f["name"] for f in pg["fields"]] == [
        "host",
        "port",
        "database",
        "username",
        "password",
        "sslmode",
    ]
    assert [f["name"] for f in pg["fields"] if f["secret"]] == ["password"]
    bad = cli("connectors", "show", "nope")
    assert bad.exit_code == 1 and "unknown connector type 'nope'" in bad.stderr

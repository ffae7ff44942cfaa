"""Shared fixtures: the real peers every test machine has.

PostgreSQL and MariaDB run on loopback on every development and CI machine. A
test that needs one and cannot reach it skips on a developer's machine but
FAILS under CI=true: a green CI must mean those tests ran.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from relink.app import Relink
from relink.settings import Settings
from relink.vault import generate_key
from tests.support import app_db
from tests.support.pg import temporary_schema

pytest_plugins = [
    "pytester",
    "tests.support.promises",
    "tests.support.private_pg",
    "tests.support.host_guard",
    "tests.support.events",
]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Prefect in tests: no telemetry (no internet here), no INFO line per task run, and its
# home (persisted results, memos) in the temp directory, not the tester's ~/.prefect:
# a test session changes nothing outside the repository and the temp directory.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
if not os.environ.get("PREFECT_HOME", "").startswith(tempfile.gettempdir()):
    # (xdist's workers inherit the controller's, which removes it at its exit)
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="relink-tests-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)


def _reachable(url: str) -> str | None:
    """None when a `SELECT 1` works, else the reason."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=_timeout_args(url))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


def _timeout_args(url: str) -> dict[str, int]:
    if url.startswith("postgresql"):
        return {"connect_timeout": 3}
    if url.startswith("mysql"):
        return {"connect_timeout": 3}
    return {}


def _require_peer(env: str, default: str) -> str:
    url = os.environ.get(env) or default
    reason = _reachable(url)
    if reason is None:
        return url
    message = f"{env}={url} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(f"CI=true and a required test peer is missing: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A superuser URL of the loopback PostgreSQL test server."""
    return _require_peer("RELINK_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """A root URL of the loopback MariaDB test server."""
    return _require_peer("RELINK_TEST_MARIADB_URL", DEFAULT_MARIADB_URL)


# --- the order files start in: the longest first ---------------------------------------

# `make test` hands whole files to its workers (`--dist loadfile --no-loadscope-reorder`)
# in the order below. pytest-xdist's own order (most tests first) starts a one-test file
# that runs for a minute and a half last, and one worker runs it alone while the others
# wait. These files take the longest on the 2-core machine (a profile of December 2026),
# longest first; the others follow with the most tests first, as before.
LONGEST_FILES = (
    "tests/e2e/test_prefect_deployments.py",
    "tests/integration/test_run.py",
    "tests/integration/test_followups.py",
    "tests/integration/test_deployments.py",
    "tests/integration/test_who_asked.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_email_ledger.py",
    "tests/integration/test_check_sweep.py",
    "tests/e2e/test_browser.py",
    "tests/integration/test_known_broken.py",
    "tests/integration/test_reconnect_email.py",
    "tests/reliability/test_email_exactly_once.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files in the order above, then by their number of tests; within a file as written."""
    files = [item.nodeid.split("::", 1)[0] for item in items]
    counts: dict[str, int] = {}
    for name in files:
        counts[name] = counts.get(name, 0) + 1
    rank = {name: n for n, name in enumerate(LONGEST_FILES)}
    first_seen = {name: n for n, name in reversed(list(enumerate(files)))}

    def key(n: int) -> tuple[int, int, int, int]:
        name = files[n]
        return (rank.get(name, len(rank)), -counts[name], first_seen[name], n)

    order = sorted(range(len(items)), key=key)
    items[:] = [items[n] for n in order]


# --- the app database: SQLite, and PostgreSQL too where the behaviour can differ --------

APP_BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("RELINK_TEST_POSTGRES_URL") else [])
BOTH_BACKENDS = "both_backends"  # the marker: locks, types, transactions, SQL forms of rules


def runs_on_both_backends(item: pytest.Function | pytest.Metafunc) -> bool:
    """Marked `both_backends` (itself or its module), or a reliability promise."""
    definition = item.definition if isinstance(item, pytest.Metafunc) else item
    return any(definition.iter_markers(BOTH_BACKENDS)) or any(definition.iter_markers("promise"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test on the app database runs on SQLite; on PostgreSQL too when it is marked
    (a test that parametrizes `database_url` itself keeps its own choice)."""
    if "database_url" not in metafunc.fixturenames:
        return
    defs = metafunc._arg2fixturedefs.get("database_url", ())
    if defs and defs[-1].func.__module__ != __name__:  # a module's own database_url
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "database_url" in (names.split(",") if isinstance(names, str) else names):
            return
    backends = APP_BACKENDS if runs_on_both_backends(metafunc) else ["sqlite"]
    metafunc.parametrize("database_url", backends, indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty app database of its own: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relink.db'}"
        return
    with temporary_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_keys=generate_key(),
        base_url="http://relink.test",
    )


@pytest.fixture
def relink_app(settings: Settings) -> Iterator[Relink]:
    """A Relink on a migrated, empty database."""
    app = Relink(settings)
    app_db.migrate(app.engine)
    yield app
    app.close()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real, temporary Prefect server for the whole session (6-7 s to start, once;
    up to a minute on a loaded 2-core machine, hence the wait longer than Prefect's 30 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

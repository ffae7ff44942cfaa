"""A refused MariaDB login reads the same on every path (the sweep, `relink reconnect
--check-only`, a reconnect with new credentials), under the errno the server sent: the
real loopback MariaDB answers 1045 or 1698 for the same refusal, depending on the
account's authentication plugin, and for a user that does not exist it fakes the login
of a real account chosen by a hash of the name. Private users are created and dropped;
the server's configuration is left as it is."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import pymysql
import pytest
import sqlalchemy as sa

from relink.connections import NewConnection, add_connection
from relink.models import Connection
from relink.sweep.run import sweep
from tests.integration.conftest import MARIADB_HOSTS, unique_name
from tests.support.reconnect import FAST_CHECKS, OWNER, T0, Cli, add_people

if TYPE_CHECKING:
    from tests.integration.conftest import MariaAdmin

pytestmark = pytest.mark.mariadb

SAID = re.compile(
    r"MySQL / MariaDB at [^:]+:\d+/\w+: access denied for this user name and password "
    r"\(the server sent (1045|1698); MariaDB sends 1045 or 1698 for the same refusal and "
    r"does not say whether the user exists\)"
)


def server_answer(url: sa.URL, username: str, password: str) -> int:
    """The errno the server sends to this login, asked directly with PyMySQL."""
    try:
        pymysql.connect(
            host=url.host, port=url.port or 3306, user=username, password=password
        ).close()
    except pymysql.err.OperationalError as exc:
        return int(exc.args[0])
    raise AssertionError(f"{username} was let in")


@pytest.fixture
def accounts(maria_admin: MariaAdmin, mariadb_url: str) -> dict[str, tuple[str, str, int | None]]:
    """username, the password the connection sends, and the errno the server answers
    (None: a user that does not exist, whose answer depends on the server's accounts)."""
    url = sa.make_url(mariadb_url)
    hashed = maria_admin.create_user()  # mysql_native_password, a hashed password
    socket_user = unique_name()  # an account that signs in through unix_socket only
    maria_admin.users.append(socket_user)
    for host in MARIADB_HOSTS:
        maria_admin.execute(f"CREATE USER '{socket_user}'@'{host}' IDENTIFIED VIA unix_socket")
    found = {
        "wrong password": (hashed.name, "not-" + hashed.password),
        "no password": (hashed.name, ""),
        "unix_socket account": (socket_user, "any"),
        "no such user": (unique_name(), "any"),
    }
    expected: dict[str, int | None] = {
        "wrong password": 1045,
        "no password": 1045,
        "unix_socket account": 1698,
        "no such user": None,
    }
    for name, (user, password) in found.items():
        if expected[name] is not None:
            assert server_answer(url, user, password) == expected[name], name
    return {name: (*found[name], expected[name]) for name in found}


def test_a_refused_mariadb_login_is_said_alike_on_every_path_with_the_errno_sent(
    relink_app, settings, mariadb_url: str, accounts
) -> None:
    url = sa.make_url(mariadb_url)
    add_people(relink_app)
    cli = Cli(settings)
    codes: set[str] = set()
    for name, (username, password, errno) in accounts.items():
        with relink_app.transaction() as session:
            conn_id = add_connection(
                session,
                relink_app.vault,
                NewConnection(
                    type="mysql",
                    name=f"Finance {name}",
                    owner=OWNER,
                    mode="direct",
                    settings={
                        "host": url.host or "127.0.0.1",
                        "port": str(url.port or 3306),
                        "database": url.database or "test",
                        "username": username,
                    },
                    secrets={"password": password},
                ),
                now=T0,
            ).id

        asyncio.run(sweep(relink_app, now=T0, policy=FAST_CHECKS, connection_ids=[conn_id]))
        with relink_app.sessions() as session:
            conn = session.get(Connection, conn_id)
            assert conn is not None
            swept = (conn.status, conn.last_error_code, conn.last_error_message)
        assert swept[0] == "disconnected", (name, swept)
        said = SAID.fullmatch(swept[2] or "")
        assert said and said.group(1) == swept[1], (name, swept)  # the code is the errno said

        check_only = cli("reconnect", conn_id, "--as", OWNER, "--check-only")
        assert check_only.exit_code == 1
        again = SAID.search(check_only.stderr)
        assert again, (name, check_only.stderr)

        new = cli("reconnect", conn_id, "--as", OWNER, "--set", f"username={username}", input="\n")
        assert new.exit_code == 1 and "the source refused the new credentials" in new.stderr
        refused = SAID.search(new.stderr)
        assert refused, (name, new.stderr)

        if errno is not None:  # the server's answer to these credentials does not vary
            assert said.group(1) == again.group(1) == str(errno), name
        codes |= {said.group(1), again.group(1), refused.group(1)}
    assert codes == {"1045", "1698"}  # both errnos met, and said in one way

"""`relink.locks`: one holder per connection across processes, a timeout that says busy,
and where the lock files live. The waits run on a test clock: nothing sleeps."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from relink.locks import ConnectionLocks, LockBusy, lock_dir


class ManualClock:
    """`clock` and `sleep` for `ConnectionLocks`: a wait moves the clock on, at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waited: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waited.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # others run meanwhile, as in a real wait


def locks_on(directory: Path, timeout: float = 60.0) -> tuple[ConnectionLocks, ManualClock]:
    clock = ManualClock()
    return ConnectionLocks(directory, timeout=timeout, clock=clock.clock, sleep=clock.sleep), clock


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from relink.locks import ConnectionLocks

    async def main():
        async with ConnectionLocks(Path(sys.argv[1])).hold(int(sys.argv[2])):
            print("held", flush=True)
            sys.stdin.read()  # until the test closes our stdin

    asyncio.run(main())
    """
)


def test_a_lock_held_by_another_process_keeps_a_second_holder_out_until_released(tmp_path):
    directory = tmp_path / "relink.db-locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), "7"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        locks, clock = locks_on(directory, timeout=5.0)

        with pytest.raises(LockBusy):
            asyncio.run(locks.acquire(7))
        assert clock.now >= 5.0  # it waited the whole timeout (on the test clock)

        asyncio.run(locks.acquire(8)).release_now()  # another connection is not locked
    finally:
        holder.communicate("", timeout=30)  # closing stdin ends the holder: lock dropped
    assert holder.returncode == 0

    held = asyncio.run(locks.acquire(7))
    held.release_now()


def test_two_holders_in_one_process_exclude_each_other_and_the_second_gets_it_after(tmp_path):
    """Each holder opens the file anew, so flock tells them apart (threads with event
    loops of their own are kept apart the same way)."""
    locks, _ = locks_on(tmp_path / "locks", timeout=1.0)
    order: list[str] = []

    async def second() -> None:
        async with locks.hold(3):
            order.append("second holds it")

    async def scenario() -> None:
        first = await locks.acquire(3)
        order.append("first holds it")
        waiting = asyncio.ensure_future(second())
        await asyncio.sleep(0)  # the second tries, and waits
        order.append("first releases it")
        first.release_now()
        await waiting

    asyncio.run(scenario())

    assert order == ["first holds it", "first releases it", "second holds it"]


def test_past_the_timeout_the_check_is_busy_and_waits_no_longer(tmp_path):
    locks, clock = locks_on(tmp_path / "locks", timeout=2.5)
    held = asyncio.run(locks.acquire(1))
    try:
        with pytest.raises(LockBusy) as busy:
            asyncio.run(locks.acquire(1))
    finally:
        held.release_now()
    assert (busy.value.connection_id, busy.value.timeout) == (1, 2.5)
    assert 2.5 <= clock.now < 2.6  # not a moment past the timeout
    assert max(clock.waited) <= 0.025  # asked again often, not once at the end


def test_the_lock_folder_is_made_on_first_use_beside_the_database_file(tmp_path):
    database = tmp_path / "data" / "relink.db"
    directory = lock_dir(f"sqlite:///{database}")
    assert directory == tmp_path / "data" / "relink.db-locks"
    assert not directory.exists()

    locks, _ = locks_on(directory)
    asyncio.run(locks.acquire(42)).release_now()

    assert directory.is_dir() and (directory / "42.lock").is_file()
    assert directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "mysql+pymysql://root@127.0.0.1:3306/test",
    ],
)
def test_no_lock_files_where_no_other_process_shares_the_file_or_rows_lock(url):
    assert lock_dir(url) is None

"""The host guard fails a test session that changed a watched file (here a temp file
standing in for the host's hba file), and names the file."""

from pathlib import Path

import pytest

from tests.support.host_guard import HostGuard, Watched, read_file

RULE = "host all all 127.0.0.1/32 trust\n"


def guard_of(path: Path) -> HostGuard:
    return HostGuard(lambda: [Watched(str(path), read_file(str(path)))])


def test_an_untouched_file_is_no_difference(tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(RULE)
    guard = guard_of(hba)
    guard.snapshot()
    hba.write_text(RULE)  # rewritten byte for byte
    assert guard.differences() == []


def test_a_line_added_on_top_is_a_difference_naming_the_file(tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(RULE)
    guard = guard_of(hba)
    guard.snapshot()
    hba.write_text("host all +relink_pwcheck 127.0.0.1/32 scram-sha-256\n" + RULE)
    (found,) = guard.differences()
    assert found.startswith(f"{hba} (md5 ")


def test_a_removed_file_is_a_difference(tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(RULE)
    guard = guard_of(hba)
    guard.snapshot()
    hba.unlink()
    (found,) = guard.differences()
    assert "unreadable after" in found


CONFTEST = """
from tests.support.host_guard import HostGuard, Watched, read_file

WATCHED = {path!r}

def pytest_configure(config):
    watched = [Watched(WATCHED, read_file(WATCHED))]
    config.pluginmanager.register(HostGuard(lambda: watched), "test-host-guard")
"""


@pytest.mark.parametrize("edits", [False, True])
def test_a_session_that_edits_the_file_fails_and_says_which(
    pytester: pytest.Pytester, tmp_path: Path, edits: bool
) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(RULE)
    pytester.makeconftest(CONFTEST.format(path=str(hba)))
    pytester.makepyfile(
        f"""
        from pathlib import Path

        def test_passes():
            if {edits}:
                path = Path({str(hba)!r})
                path.write_text("host all all 0.0.0.0/0 trust\\n" + path.read_text())
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1)  # the test itself passed; the session did not
    if edits:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines([f"changed during the tests: {hba} (md5 *"])
    else:
        assert result.ret == pytest.ExitCode.OK
        assert "changed during the tests" not in result.stdout.str()

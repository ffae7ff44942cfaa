import subprocess
import sys
import textwrap

import pytest

import connectors


def test_unknown_type_names_the_known_ones():
    with pytest.raises(connectors.UnknownConnector) as info:
        connectors.get("postgress")
    assert "'postgress'" in str(info.value) and "postgres" in str(info.value)


def test_first_use_from_many_threads_sees_a_complete_registry():
    # a fresh interpreter, so the registry is loaded by the racing threads themselves
    script = textwrap.dedent(
        """
        import threading, connectors
        errors = []
        def use():
            try:
                connectors.get("salesforce"); connectors.get("postgres")
            except Exception as exc:
                errors.append(exc)
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(errors))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"

"""The dataset query format of the HTTP connectors, without a server."""

from __future__ import annotations

import pytest

from connectors.base import Unreachable
from connectors.http_query import parse_query, records_to_result, resolve_url


def test_a_query_is_a_path_and_an_optional_dotted_records_path():
    assert parse_query("/api/records?path=x | data.records") == (
        "/api/records?path=x",
        ["data", "records"],
    )
    assert parse_query("  /me  ") == ("/me", [])
    assert parse_query("/items |") == ("/items", [])


@pytest.mark.parametrize("query", ["", " | data", "/x | a..b", "/x | a | b"])
def test_malformed_queries_are_invalid_query(query):
    with pytest.raises(Unreachable) as caught:
        parse_query(query)
    assert caught.value.code == "invalid_query"


def test_paths_resolve_under_the_base_and_never_leave_its_origin():
    base = "https://graph.microsoft.com/v1.0/"
    assert resolve_url(base, "/me") == "https://graph.microsoft.com/v1.0/me"
    assert resolve_url(base, "me?x=1") == "https://graph.microsoft.com/v1.0/me?x=1"
    assert resolve_url(base, "https://graph.microsoft.com:443/beta/me").endswith("/beta/me")
    for other in ("https://evil.example/me", "http://graph.microsoft.com/me"):
        with pytest.raises(Unreachable, match="not on the connection's API host"):
            resolve_url(base, other)
    with pytest.raises(Unreachable, match="no API base URL"):
        resolve_url(None, "/me")


def test_records_become_columns_in_first_seen_order_and_tuples():
    body = {"data": {"records": [{"id": 1, "name": "a"}, {"id": 2, "extra": True}, 7]}}
    result = records_to_result(body, ["data", "records"])
    assert result.columns == ["id", "name", "extra", "value"]
    assert result.rows == [(1, "a", None, None), (2, None, True, None), (None, None, None, 7)]


def test_a_list_body_an_object_and_null():
    assert records_to_result([{"a": 1}], []).rows == [(1,)]
    assert records_to_result({"sub": "x", "name": "y"}, []).columns == ["sub", "name"]
    assert records_to_result({"items": None}, ["items"]).rows == []
    assert records_to_result({"items": [[1, 2], [3]]}, ["items", "1"]).rows == [(3,)]


def test_a_missing_records_path_names_what_is_there():
    with pytest.raises(Unreachable, match=r"no 'recs' in data of the answer \(keys: records\)"):
        records_to_result({"data": {"records": []}}, ["data", "recs"])

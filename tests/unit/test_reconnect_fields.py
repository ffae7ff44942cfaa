"""What each connector lets a reconnect change (its declaration, `Field.reconnect`), the
generic OAuth connector's extra authorization parameters, and how the connection page's
history shows a change of settings."""

import pytest

import connectors
from connectors.oauth2 import parse_authorize_params
from relink.web.views import describe_details


def asked(type_: str, **settings: str) -> list[str]:
    return [f.name for f in connectors.get(type_).reconnect_fields(settings)]


@pytest.mark.parametrize("type_", ["postgres", "mysql"])
def test_a_database_reconnect_may_change_where_and_as_whom_it_signs_in(type_):
    assert asked(type_) == ["host", "port", "database", "username", "password"]


def test_an_api_key_reconnect_may_change_the_key_and_the_base_url():
    assert asked("api_key") == ["base_url", "api_key"]


def test_a_named_oauth_provider_is_the_consent_only_unless_the_connection_has_its_own_client():
    assert asked("salesforce") == []
    assert asked("salesforce", client_id="ours") == ["client_id", "client_secret"]


def test_the_generic_oauth_provider_may_change_its_endpoints_and_its_own_client():
    endpoints = [
        "authorize_url",
        "token_url",
        "introspection_url",
        "revocation_url",
        "probe_url",
        "issuer",
        "jwks_uri",
        "api_base_url",
        "scope",
        "authorize_params",
    ]
    assert asked("oauth2") == endpoints
    assert asked("oauth2", client_id="ours") == ["client_id", "client_secret", *endpoints]


def test_the_declaration_is_part_of_the_connection_requirements():
    fields = {f["name"]: f for f in connectors.get("mysql").describe()["fields"]}
    assert fields["username"]["reconnect"] is True
    assert fields["sslmode"]["reconnect"] is False
    assert fields["password"]["required"] is False  # MariaDB users may have no password


def test_extra_authorization_parameters_are_a_setting():
    assert parse_authorize_params("access_type=offline&prompt=consent") == (
        ("access_type", "offline"),
        ("prompt", "consent"),
    )
    assert parse_authorize_params(" access_type=offline  prompt=select_account%20consent") == (
        ("access_type", "offline"),
        ("prompt", "select_account consent"),
    )
    assert parse_authorize_params("") == ()
    generic = connectors.get("oauth2")
    assert generic.settings_problem({"authorize_params": "prompt=consent"}) is None
    assert "expected name=value" in generic.settings_problem({"authorize_params": "offline"})
    assert "may not set 'state'" in generic.settings_problem({"authorize_params": "state=x"})
    assert "may not set 'client_id'" in generic.settings_problem(
        {"authorize_params": "client_id=other"}
    )


def test_the_history_shows_a_change_of_settings_as_old_and_new_value():
    details = {
        "outcome": "auth_failed",
        "changed": {"username": ["relink_demo_finance", "root"], "port": [None, "3307"]},
        "secrets_entered": ["password"],
    }
    assert describe_details(details) == (
        "outcome: auth_failed; changed: username relink_demo_finance → root, port — → 3307; "
        "secrets entered: password"
    )

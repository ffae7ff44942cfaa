"""Whose account a connection uses: the pure rules of relink.domain.identity."""

from __future__ import annotations

from relink.domain.identity import (
    Identity,
    from_claims,
    identity,
    merged,
    observed,
    replacement_line,
    replaces,
)

MAX = Identity("00u-max", "max@acme.test")
ANN = Identity("00u-ann", "ann@acme.test")


def test_an_id_token_or_userinfo_names_its_subject_and_email():
    claims = {"sub": "00u-ann", "email": "ann@acme.test", "name": "Ann"}
    assert from_claims(claims) == ANN


def test_salesforce_identity_url_is_the_subject_whatever_the_claims_say():
    url = "https://login.salesforce.com/id/00D000000000001/005000000000001"
    found = from_claims({"user_id": "005000000000001", "email": "ann@acme.test"}, subject=url)
    assert found == Identity(url, "ann@acme.test")


def test_microsoft_graph_me_names_its_id_and_mail():
    me = {"id": "a1b2", "mail": None, "userPrincipalName": "ann@acme.test"}
    assert from_claims(me) == Identity("a1b2", "ann@acme.test")


def test_an_answer_naming_nobody_is_no_identity():
    assert from_claims({"portalId": 62515, "timeZone": "US/Eastern"}) is None
    assert from_claims(["not", "claims"]) is None
    assert from_claims({"sub": "  ", "email": "ann@acme.test"}) is None


def test_a_claim_that_echoes_the_secret_is_never_used():
    key = "sk_live_0123456789"
    assert from_claims({"sub": key, "name": "Billing"}, secrets=[key]) is None
    found = from_claims({"id": "acct_1", "name": f"key {key}"}, secrets=[key])
    assert found == Identity("acct_1", "acct_1")


def test_a_label_defaults_to_the_subject_and_both_fit_their_columns():
    assert identity("reader@db.acme.test") == Identity("reader@db.acme.test", "reader@db.acme.test")
    long = identity("s" * 900, "l" * 900)
    assert long is not None and (len(long.subject), len(long.label)) == (500, 320)
    assert identity(None, "ann@acme.test") is None


def test_a_check_records_the_first_identity_and_a_new_label_but_keeps_what_it_cannot_see():
    assert observed(None, ANN) == ANN
    assert observed(ANN, ANN) is None
    renamed = Identity(ANN.subject, "ann.smith@acme.test")
    assert observed(ANN, renamed) == renamed
    assert observed(ANN, None) is None  # the source said nothing this time: keep it


def test_a_reconnect_as_another_account_is_a_replacement():
    assert replaces(MAX, ANN)
    assert replacement_line(MAX, ANN) == "This replaces max@acme.test with ann@acme.test"


def test_the_same_account_or_an_unknown_side_is_no_replacement():
    assert not replaces(MAX, Identity(MAX.subject, "max.new@acme.test"))
    assert not replaces(None, ANN)
    assert not replaces(MAX, None)


def test_two_accounts_with_one_label_are_told_apart_by_their_subjects():
    one, two = Identity("u1", "Sales team"), Identity("u2", "Sales team")
    assert replacement_line(one, two) == "This replaces Sales team (u1) with Sales team (u2)"


def test_a_grants_subject_wins_and_takes_the_checks_label_only_for_the_same_subject():
    url = "https://login.salesforce.com/id/00D000000000001/005000000000001"
    told = Identity(url, url)  # Salesforce's identity URL: no label of its own
    assert merged(told, Identity(url, "ann@acme.test")) == Identity(url, "ann@acme.test")
    assert merged(told, Identity("someone-else", "max@acme.test")) == told
    assert merged(ANN, Identity(ANN.subject, "Ann")) == ANN  # the ID token's email stays
    assert merged(None, ANN) == ANN

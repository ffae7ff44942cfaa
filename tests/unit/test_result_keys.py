"""How a batch summary counts results by provider, outcome and code: a key that survives
JSON (a Prefect task result) and reads back as the same record."""

from __future__ import annotations

from relink.domain.words import CHECK_ERROR, Outcome
from relink.sweep.summary import ResultKey, SweepSummary


def test_a_result_key_reads_back_as_written():
    for key in (
        ResultKey("salesforce", Outcome.MISCONFIGURED, "invalid_client"),
        ResultKey("postgres", Outcome.OK),
        ResultKey("hubspot", CHECK_ERROR, "undecryptable"),
    ):
        assert ResultKey.parse(key.key()) == key
    assert ResultKey("salesforce", Outcome.AUTH_FAILED, None).key() == "salesforce|auth_failed|"


def test_installation_problems_are_found_by_their_keys():
    key = ResultKey("salesforce", Outcome.MISCONFIGURED, "invalid_client")
    batch = {
        "checked": 3,
        "outcomes": {"misconfigured": 3},
        "by_provider": {key.key(): 3},
        "installation": {key.installation_key(): "set RELINK_OAUTH__SALESFORCE__CLIENT_ID"},
    }
    summary = SweepSummary.combine([batch], duration_s=1.0)
    [problem] = summary.installation_problems
    assert (problem.provider, problem.code, problem.connections) == (
        "salesforce",
        "invalid_client",
        3,
    )
    assert problem.fix == "set RELINK_OAUTH__SALESFORCE__CLIENT_ID"

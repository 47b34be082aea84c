"""Judging a turn: each expectation passes or fails on what was observed, and says why."""

from __future__ import annotations

from sagelab.scenarios import Expect, Observation, ToolCall
from sagelab.scenarios.expectations import evaluate


def checks(expect: dict, observed: Observation, reference: str | None = None) -> dict[str, bool]:
    return {
        c.name: c.passed
        for c in evaluate(Expect.model_validate(expect), observed, reference=reference)
    }


SEARCH = ToolCall("search_records", {"query": "Oslo", "limit": "5"}, False)


def test_tool_parameters_are_a_case_insensitive_subset_and_numbers_match_text() -> None:
    seen = Observation(tools=[SEARCH, ToolCall("get_record", {"record_id": "5"}, True)])
    assert checks({"tool": {"name": "search_records", "parameters": {"query": "oslo"}}}, seen) == {
        "tool search_records": True
    }
    assert checks({"tool": {"name": "get_record", "parameters": {"record_id": 5}}}, seen)[
        "tool get_record"
    ]
    assert not checks({"tool": {"name": "search_records", "parameters": {"query": "bergen"}}},
                      seen)["tool search_records"]  # fmt: skip
    assert not checks({"tool": {"name": "search_records", "parameters": {"city": "oslo"}}}, seen)[
        "tool search_records"
    ]
    assert not checks({"tool": "update_record"}, seen)["tool update_record"]


def test_tool_error_state_is_checked_both_ways() -> None:
    seen = Observation(tools=[ToolCall("get_record", {"record_id": "42"}, True)])
    assert checks({"tool": {"name": "get_record", "error": True}}, seen)["tool get_record"]
    assert not checks({"tool": {"name": "get_record", "error": False}}, seen)["tool get_record"]


def test_an_empty_tool_list_means_no_tool_may_be_called() -> None:
    assert checks({"tools": []}, Observation()) == {"no tools": True}
    assert checks({"tools": []}, Observation(tools=[SEARCH])) == {"no tools": False}


def test_parameters_that_could_not_be_observed_fail_and_say_how_to_see_them() -> None:
    seen = Observation(tools=[ToolCall("search_records", None, False)])
    [check] = evaluate(
        Expect.model_validate({"tool": {"name": "search_records", "parameters": {"query": "x"}}}),
        seen,
        reference=None,
    )
    assert not check.passed
    assert "--store" in check.observed
    # Without parameters to compare, the name alone is enough.
    assert checks({"tool": "search_records"}, seen)["tool search_records"]


def test_reply_text_checks_ignore_case_and_spacing() -> None:
    seen = Observation(reply="I found 2 accounts:  Anna Berg in Oslo.")
    result = checks({"reply_contains": ["anna berg", "OSLO"], "reply_not_contains": "Bergen"}, seen)
    assert result == {
        "reply_contains 'anna berg'": True,
        "reply_contains 'OSLO'": True,
        "reply_not_contains 'Bergen'": True,
    }
    assert not checks({"reply_contains": "Lena"}, seen)["reply_contains 'Lena'"]
    assert not checks({"reply_not_contains": "anna"}, seen)["reply_not_contains 'anna'"]


def test_wer_uses_the_shared_normalisation() -> None:
    seen = Observation(heard="Update record 5, set the status to paused.")
    assert checks({"max_wer": 0.0}, seen, "update record five set the status to paused")["max_wer"]
    half = Observation(heard="update record")
    assert not checks({"max_wer": 0.5}, half, "update record five set the status to paused")[
        "max_wer"
    ]


def test_budgets_pass_fail_and_fail_when_not_measured() -> None:
    seen = Observation(latencies_ms={"voice_to_voice": 950.0, "brain": 3.0})
    result = evaluate(
        Expect.model_validate(
            {"within_ms": {"voice_to_voice": 1000, "brain": 2, "endpointing": 600}}
        ),
        seen,
        reference=None,
    )
    by_name = {c.name: c for c in result}
    assert by_name["within_ms.voice_to_voice"].passed
    assert not by_name["within_ms.brain"].passed
    assert by_name["within_ms.brain"].observed == "3 ms"
    assert not by_name["within_ms.endpointing"].passed
    assert "not measured" in by_name["within_ms.endpointing"].observed


def test_interruption_and_reply_count() -> None:
    assert checks(
        {"interrupted": True, "replies": 1}, Observation(interrupted=True, replies=1)
    ) == {
        "interrupted": True,
        "replies": True,
    }
    assert checks({"interrupted": True, "replies": 1}, Observation(replies=2)) == {
        "interrupted": False,
        "replies": False,
    }


def test_a_step_that_did_not_finish_fails_even_without_expectations() -> None:
    [check] = evaluate(Expect(), Observation(), reference=None, error="no agent reply within 5 s")
    assert (check.name, check.passed, check.observed) == ("ran", False, "no agent reply within 5 s")

"""What a retry runs with, and what is not retried (`loomgit.retry`); the daemon's
endpoint and the CLI are tested end to end in test_serve.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import deployment

from loomgit import retry
from loomgit.cli_retry import RETRIED
from loomgit.history import History
from loomgit.records import STATUSES, Execution
from loomgit.runner import execute
from loomgit.runtime import Deployment, TriggerEvent


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with History(tmp_path / "history.db") as h:
        yield h


def _ex(trigger: dict[str, Any], **fields: Any) -> Execution:
    return Execution(
        id=fields.pop("id", "01JD3N5Q8WZ4T0ZJ5J7Q5X9Y1M"),
        environment="production",
        workflow="order-sync",
        trigger_type=fields.pop("trigger_type", "webhook"),
        status=fields.pop("status", "failed"),
        started_at=1.0,
        trigger=trigger,
        **fields,
    )


def test_a_retry_runs_with_the_recorded_trigger_less_its_redacted_headers() -> None:
    recorded = {
        "path": "orders/:shop",
        "method": "POST",
        "body": {"order": {"number": 1001}},
        "params": {"shop": "eu"},
        "query": {"dry": "0"},
        "headers": {
            "content-type": "application/json",
            "authorization": "[redacted]",
            "cookie": "",
            "x-shop-token": "key [redacted]",  # a credential's value in a header of its own
            "x-request-id": "r-1",
        },
    }
    event = retry.trigger(_ex(recorded))
    assert event.type == "webhook"
    assert event.body == {"order": {"number": 1001}}
    assert (event.params, event.query) == ({"shop": "eu"}, {"dry": "0"})
    assert event.headers == {"content-type": "application/json", "x-request-id": "r-1"}
    assert event.details == {
        "path": "orders/:shop",
        "method": "POST",
        "retry_of": "01JD3N5Q8WZ4T0ZJ5J7Q5X9Y1M",
    }
    assert event.record()["retry_of"] == "01JD3N5Q8WZ4T0ZJ5J7Q5X9Y1M"  # what the history keeps


def test_a_retry_of_a_retry_names_the_one_it_retries() -> None:
    recorded = {
        "scheduled_time": "2026-11-23T09:00:00+01:00",
        "retry_of": "01JD3N5Q8W0000000000000000",
    }
    event = retry.trigger(_ex(recorded, trigger_type="schedule", id="01JD3N5Q8W1111111111111111"))
    assert (event.type, event.scheduled_time) == ("schedule", "2026-11-23T09:00:00+01:00")
    assert event.details == {"retry_of": "01JD3N5Q8W1111111111111111"}
    assert event.body is None and not event.headers
    assert retry.key(_ex({}, id="01JD3N5Q8W1111111111111111")) == "retry:01JD3N5Q8W1111111111111111"


@pytest.mark.parametrize(
    ("recorded", "path"),
    [
        ({"body": {"card": {"token": "[redacted]"}}}, "body.card.token"),
        ({"body": "paid with [redacted] today"}, "body"),
        ({"body": {"lines": [{"sku": "a"}, {"sku": "x[redacted]"}]}}, "body.lines[1].sku"),
        ({"body": {"[redacted]": 1}}, "body.[redacted]"),  # a key that was a secret
        ({"query": {"token": "[redacted]"}}, "query.token"),
        ({"params": {"shop": "[redacted]"}}, "params.shop"),
        (
            {"body": {"a": 1, "b": [True, None, 2.5]}, "headers": {"authorization": "[redacted]"}},
            None,
        ),
    ],
)
def test_a_value_recorded_redacted_is_found_where_the_sender_put_it(
    recorded: dict[str, Any], path: str | None
) -> None:
    assert retry.masked(recorded) == path


def test_what_is_not_retried_says_why() -> None:
    assert retry.why_not(_ex({})) is None
    for status in ("timed_out", "interrupted", "cancelled"):
        assert retry.why_not(_ex({}, status=status)) is None
    assert retry.why_not(_ex({}, status="succeeded")) == (
        "it succeeded; only an execution that did not is retried"
    )
    for status in ("queued", "running"):
        assert retry.why_not(_ex({}, status=status)) == (
            f"it is still {status}; retry it once it has ended"
        )
    assert retry.why_not(_ex({}, trigger_type="manual")) == (
        "it was a manual run; run it again with `loomgit run order-sync` (its input is in "
        "`loomgit executions show 01JD3N5Q8WZ4T0ZJ5J7Q5X9Y1M`)"
    )
    assert retry.why_not(_ex({"query": {"t": "[redacted]"}}, trigger_type="api")) == (
        "its trigger.query.t was recorded redacted (it held a credential's value), so it "
        "cannot be sent again as it came; have its sender send it again"
    )


def test_the_cli_offers_the_statuses_that_are_retried() -> None:
    assert [s for s in STATUSES if s not in retry.NOT_RETRIED] == RETRIED
    assert all(retry.why_not(_ex({}, status=s)) is None for s in RETRIED)


# -- a retry from the step that failed ---------------------------------------------------

V1 = """
- id: order
  type: set
  with: {number: "{{ trigger.body.n }}", shop: "{{ vars.shop }}"}
- id: note
  type: set
  when: "{{ trigger.body.n > 100 }}"
  with: {big: true}
- id: pay
  type: fail
  with: {message: "the payment service answered 503"}
- id: receipt
  type: set
  with: {text: "order {{ steps.order.output.number }} paid"}
"""
FIXED = V1.replace(
    'type: fail\n  with: {message: "the payment service answered 503"}',
    "type: set\n  with: {paid: true}",
)


def _first_run(history: History, steps: str = V1, **kw: Any) -> tuple[Execution, Deployment]:
    dep = replace(deployment(steps, **({"variables": {"shop": "eu"}} | kw)), version=1)
    ex = asyncio.run(execute(dep, TriggerEvent("webhook", body={"n": 7}), history))
    assert (ex.status, ex.stopped_at) == ("failed", "pay")
    return history.get(ex.id), dep


def test_a_retry_from_the_failed_step_takes_the_steps_before_it_as_recorded(
    history: History,
) -> None:
    failed, _ = _first_run(history)
    fixed = replace(deployment(FIXED, variables={"shop": "eu"}), version=2)
    reused, why = retry.reused(failed, fixed)
    assert why is None
    assert [(r.step_id, r.status, r.attempts) for r in reused] == [
        ("order", "succeeded", 0),
        ("note", "skipped", 0),
    ]
    assert reused[0].output == {"number": 7, "shop": "eu"}
    assert reused[0].logs[-1]["message"] == f"not run again: taken as {failed.id} recorded it"
    event = retry.trigger(failed, reused)
    assert event.details["resumed_from"] == "pay"
    assert "resumed_from" not in retry.trigger(failed).details  # from the start
    unrecorded = replace(failed, steps=failed.steps[:2])  # stopped at pay, not recorded
    assert retry.reused(unrecorded, fixed) == (reused, None)
    assert retry.trigger(unrecorded, reused).details["resumed_from"] == "pay"
    again = asyncio.run(execute(fixed, event, history))
    assert again.status == "succeeded", again.error
    assert [(s.step_id, s.status, s.attempts) for s in again.steps] == [
        ("order", "succeeded", 0),
        ("note", "skipped", 0),
        ("pay", "succeeded", 1),
        ("receipt", "succeeded", 1),
    ]
    assert again.output == {"text": "order 7 paid"}  # from the order step it did not run
    recorded = history.get(again.id)
    assert recorded.trigger["resumed_from"] == "pay"
    assert recorded.trigger["retry_of"] == failed.id
    assert recorded.steps[0].logs[-1]["message"].startswith("not run again: taken as ")


def _why(failed: Execution, steps: str, **kw: Any) -> str | None:
    reused, why = retry.reused(failed, replace(deployment(steps, **kw), version=2))
    assert (reused == ()) == (why is not None)
    return why


def test_a_retry_from_the_failed_step_is_refused_where_the_record_cannot_stand_in(
    history: History,
) -> None:
    failed, _ = _first_run(history)
    tail = ", so the retry cannot start at step pay; retry it from the start"
    eu = {"variables": {"shop": "eu"}}
    # The version served now would not have run the steps before as they ran.
    assert _why(failed, FIXED.replace("id: note", "id: notes"), **eu) == (
        "demo v2, served now, has no set step note in its place" + tail
    )
    assert _why(failed, FIXED.replace("n > 100", "n > 1"), **eu) == (
        "step note would run in demo v2: its `when` decides otherwise now" + tail
    )
    assert _why(failed, FIXED, variables={"shop": "us"}) == (
        "step order would be sent other parameters in demo v2 (its `with` renders otherwise)" + tail
    )
    assert _why(failed, FIXED.replace("trigger.body.n }}", "trigger.body.m }}", 1), **eu) == (
        "step order's parameters do not render in demo v2: with.number: trigger.body has no "
        "key 'm' (its keys: n)" + tail
    )
    assert _why(failed, FIXED.replace("n > 100", "m > 100"), **eu) == (
        "step note's condition does not render in demo v2: when: trigger.body has no key 'm' "
        "(its keys: n)" + tail
    )
    # What the record holds is not the step's whole output.
    cut = {"truncated": True, "bytes": 70000, "preview": "{…"}
    first = replace(failed.steps[0], output=cut)
    assert _why(replace(failed, steps=(first, *failed.steps[1:])), FIXED, **eu) == (
        "step order's output was recorded truncated" + tail
    )


def test_a_step_whose_output_held_a_credential_is_not_taken_from_the_record(
    history: History,
) -> None:
    steps = V1.replace('shop: "{{ vars.shop }}"', 'key: "{{ credentials.shop.key }}"')
    creds = {"credentials": {"shop": {"key": "sk-retry-canary-41"}}}
    failed, _ = _first_run(history, steps, **creds)
    assert failed.steps[0].output == {"number": 7, "key": "[redacted]"}
    assert _why(failed, steps, **creds) == (
        "step order's output was recorded redacted (it held a credential's value), so the "
        "retry cannot start at step pay; retry it from the start"
    )


def test_a_step_that_failed_and_went_on_is_taken_while_the_version_goes_on_too(
    history: History,
) -> None:
    steps = "- id: ping\n  type: fail\n  on_error: continue\n  with: {message: down}\n" + V1
    failed, _ = _first_run(history, steps)
    assert _why(failed, steps, variables={"shop": "eu"}) is None
    stops = steps.replace("  on_error: continue\n", "")
    assert _why(failed, stops, variables={"shop": "eu"}) == (
        "step ping failed, and demo v2 stops there, so the retry cannot start at step pay; "
        "retry it from the start"
    )

"""What a retry runs with, and what is not retried (`loomgit.retry`); the daemon's
endpoint and the CLI are tested end to end in test_serve.py."""

from __future__ import annotations

from typing import Any

import pytest

from loomgit import retry
from loomgit.cli_retry import RETRIED
from loomgit.records import STATUSES, Execution


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

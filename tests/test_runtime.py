"""The execution engine: steps, templates, http against a real server on 127.0.0.1,
retries, timeouts, `when`, `on_error`, time limits, cancellation, truncation, redaction."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import deployment
from echo_server import EchoServer, serve

from loomgit.history import History
from loomgit.records import Query
from loomgit.runner import execute
from loomgit.runtime import Deployment, TriggerEvent

CANARY = "LOOMGIT-CANARY-runtime-7f3a9c"


@pytest.fixture
def server() -> Iterator[EchoServer]:
    yield from serve()


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with History(tmp_path / "history.db") as h:
        yield h


def run(dep: Deployment, history: History, body: Any = None, **kw: Any) -> Any:
    trigger = TriggerEvent("manual", body=body)
    return asyncio.run(execute(dep, trigger, history, **kw))


def test_set_then_transform_sees_earlier_outputs_with_their_types(history: History) -> None:
    dep = deployment(
        """
        - id: order
          type: set
          with:
            items: "{{ trigger.body.order.items }}"
            label: "order {{ trigger.body.order.number }} for {{ vars.shop }}"
        - id: count
          type: transform
          with: {expression: "length(steps.order.output.items)"}
        """,
        variables={"shop": "north"},
    )
    ex = run(dep, history, {"order": {"number": 7, "items": [1, 2, 3]}})
    assert ex.status == "succeeded"
    assert ex.steps[0].output == {"items": [1, 2, 3], "label": "order 7 for north"}
    assert ex.output == 3
    stored = history.get(ex.id)
    assert [s.status for s in stored.steps] == ["succeeded", "succeeded"]
    assert stored.output == 3 and stored.steps[0].output["items"] == [1, 2, 3]


def test_http_sends_json_headers_and_query(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: call
          type: http
          with:
            method: POST
            url: "{server.url}/orders"
            headers: {{X-Env: "{{{{ env }}}}"}}
            query: {{page: 2, full: true}}
            json: {{number: "{{{{ trigger.body.n }}}}"}}
        """
    )
    ex = run(dep, history, {"n": 5})
    assert ex.status == "succeeded", ex.error
    out = ex.output
    assert out["status"] == 200
    assert out["json"]["method"] == "POST"
    assert out["json"]["body"] == {"number": 5}
    assert out["json"]["query"] == {"page": "2", "full": "true"}
    assert out["json"]["headers"]["X-Env"] == "development"
    # The answer's header names are lower case, as a trigger's are; one sent twice is joined.
    assert out["headers"]["content-type"] == "application/json"
    assert out["headers"]["x-seen"] == "once, twice"
    assert all(name == name.lower() for name in out["headers"])


def test_unexpected_status_fails_the_step_and_stops(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: call
          type: http
          with: {{url: "{server.url}/status/404"}}
        - id: after
          type: log
          with: {{message: never}}
        """
    )
    ex = run(dep, history)
    assert ex.status == "failed" and ex.stopped_at == "call"
    assert "answered 404, expected 2xx" in ex.error
    assert [s.step_id for s in history.get(ex.id).steps] == ["call"]


def test_retry_succeeds_after_failures(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: call
          type: http
          with: {{url: "{server.url}/flaky/a/2"}}
          retry: {{attempts: 3, backoff: 10ms}}
        """
    )
    ex = run(dep, history)
    assert ex.status == "succeeded"
    assert ex.steps[0].attempts == 3 and server.hits["/flaky/a/2"] == 3
    assert [line["level"] for line in ex.steps[0].logs] == ["warning", "warning"]


def test_retry_gives_up_after_its_attempts(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: call
          type: http
          with: {{url: "{server.url}/flaky/b/5"}}
          retry: {{attempts: 2, backoff: 10ms}}
        """
    )
    ex = run(dep, history)
    assert ex.status == "failed" and ex.steps[0].attempts == 2
    assert server.hits["/flaky/b/5"] == 2


def test_step_timeout_with_on_error_continue(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: slow
          type: http
          with: {{url: "{server.url}/slow/2"}}
          timeout: 200ms
          on_error: continue
        - id: report
          type: set
          with: {{was: "{{{{ steps.slow.status }}}}", output: "{{{{ steps.slow.output }}}}"}}
        """
    )
    ex = run(dep, history)
    assert ex.status == "succeeded"
    assert ex.steps[0].status == "timed_out" and "within 0.2s" in ex.steps[0].error
    assert ex.output == {"was": "timed_out", "output": None}


def test_execution_time_limit_records_where_it_stopped(
    server: EchoServer, history: History
) -> None:
    dep = deployment(
        f"""
        - id: first
          type: set
          with: {{a: 1}}
        - id: slow
          type: http
          with: {{url: "{server.url}/slow/3", timeout: 10s}}
        """,
        timeout="300ms",
    )
    ex = run(dep, history)
    assert ex.status == "timed_out" and ex.stopped_at == "slow"
    assert "time limit of 0.3s" in ex.error
    stored = history.get(ex.id)
    assert [(s.step_id, s.status) for s in stored.steps] == [
        ("first", "succeeded"),
        ("slow", "timed_out"),
    ]
    assert stored.duration_ms is not None and stored.duration_ms < 2000


def test_cancelling_records_cancelled(server: EchoServer, history: History) -> None:
    dep = deployment(
        f"""
        - id: slow
          type: http
          with: {{url: "{server.url}/slow/3"}}
        """
    )

    async def cancel_soon() -> None:
        task = asyncio.create_task(execute(dep, TriggerEvent("manual"), history))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    [ex] = history.query(Query())
    stored = history.get(ex.id)
    assert stored.status == "cancelled" and stored.stopped_at == "slow"
    assert stored.steps[-1].status == "cancelled"


def test_when_skips_and_runs(history: History) -> None:
    dep = deployment(
        """
        - id: big
          type: set
          with: {label: big}
          when: trigger.body.amount > 100
        - id: small
          type: set
          with: {label: small}
          when: "{{ trigger.body.amount <= 100 }}"
        """
    )
    ex = run(dep, history, {"amount": 5})
    assert [s.status for s in ex.steps] == ["skipped", "succeeded"]


def test_template_error_at_run_time_is_a_failed_step(history: History) -> None:
    """The error names where the template stands among the step's parameters."""
    dep = deployment(
        """
        - id: greet
          type: set
          with: {text: "hello {{ trigger.body.customer.name }}"}
        """
    )
    ex = run(dep, history, {"order": 1})
    assert ex.status == "failed" and ex.stopped_at == "greet"
    assert ex.error == (
        "step greet failed: with.text: trigger.body has no key 'customer' (its keys: order)"
    )
    nested = deployment(
        """
        - id: post
          type: set
          with:
            json: {members: [{email: "{{ trigger.body.email }}"}, {email: "{{ nope }}"}]}
        """
    )
    ex = run(nested, history, {"email": "a@example.com"})
    assert ex.error == (
        "step post failed: with.json.members[1].email: 'nope' is undefined (a template sees:"
        " trigger, steps, credentials, vars, env, workflow)"
    )


def test_a_missing_key_names_its_path_and_what_is_there(history: History) -> None:
    """Jinja says "'dict object' has no attribute 'total'"; the error names the path that
    lacked it and what that holds, so the sender's mistake can be told from the author's."""
    body = {
        "id": "o4",
        "lines": [{"sku": "a"}],
        "customer": None,
        "name": "ada",
        "wide": {f"k{i}": i for i in range(12)},
    }
    cases = {
        "{{ (trigger.body.total * 100) | int }}": (
            "trigger.body has no key 'total' (its keys: id, lines, customer, name, wide)"
        ),
        "{{ trigger.body.customer.name }}": (
            "trigger.body.customer is null, so it has no key 'name'"
        ),
        "{{ trigger.body.lines[3].sku }}": "trigger.body.lines has no item 3 (it holds 1)",
        "{{ trigger.body.name.first }}": "trigger.body.name is text, so it has no key 'first'",
        "{{ trigger.body.wide.k99 }}": (
            "trigger.body.wide has no key 'k99' (its keys: k0, k1, k2, k3, k4, k5, k6, k7, …"
            " (12 keys))"
        ),
        # A loop's variable is named as the template names it.
        "{% for line in trigger.body.lines %}{{ line.qty }}{% endfor %}": (
            "line has no key 'qty' (its keys: sku)"
        ),
        # The key a `default` covers is not the one reported.
        "{{ trigger.body.mode | default('ok') }} {{ trigger.body['mode'] }}": (
            "trigger.body has no key 'mode' (its keys: id, lines, customer, name, wide)"
        ),
        # A value a filter made has no path to name: Jinja's own words, not another
        # chain's path that happens to end in the same key.
        "{{ trigger.body.lines[0].sku }} {{ ([{}] | first).sku }}": (
            "'dict object' has no attribute 'sku'"
        ),
        "{{ credentials.shop.secret }}": "credentials.shop has no key 'secret' (its keys: token)",
        "{{ steps.lookup.output.json }}": (
            "steps.lookup.output is null, so it has no key 'json' (step lookup skipped)"
        ),
    }
    for template, reason in cases.items():
        dep = deployment(
            f"""
            - id: lookup
              type: set
              with: {{a: 1}}
              when: "false"
            - id: use
              type: set
              with: {{value: {json.dumps(template)}}}
            """,
            credentials={"shop": {"token": "tok-3fd9a1c7e2"}},
        )
        ex = run(dep, history, body)
        assert ex.error == f"step use failed: with.value: {reason}", template
        assert "tok-3fd9a1c7e2" not in json.dumps(history.get(ex.id).to_json())


def test_a_missing_key_named_like_a_dict_method_is_missing(history: History) -> None:
    """An order sent without `items`: `order.items` is a missing key, not the dict's
    method (which rendered as "<built-in method items of dict object at 0x…>" and went
    on to the next step); calling the method still works."""
    dep = deployment(
        """
        - id: order
          type: set
          with:
            items: "{{ trigger.body.order.items | default([]) }}"
            known: "{{ trigger.body.order['values'] is defined }}"
            pairs: "{% for k, v in trigger.body.order.items() %}{{ k }}={{ v }}{% endfor %}"
            got: "{{ trigger.body.order.get('number') }}"
        - id: lines
          type: set
          with: {lines: "{{ trigger.body.order.items }}"}
        """
    )
    ex = run(dep, history, {"order": {"number": 7}})
    assert ex.steps[0].output == {"items": [], "known": False, "pairs": "number=7", "got": 7}
    assert ex.status == "failed" and ex.stopped_at == "lines"
    assert ex.error == (
        "step lines failed: with.lines: trigger.body.order has no key 'items' (its keys: number)"
    )
    assert "built-in method" not in json.dumps(history.get(ex.id).to_json())
    # A method named without calling it is no value to record or send on either.
    named = deployment(
        """
        - id: shout
          type: set
          with: {text: "hi {{ trigger.body.name.upper }}"}
        """
    )
    ex = run(named, history, {"name": "ada"})
    assert ex.error == (
        "step shout failed: with.text: 'upper' is a function, not a value: call it, as upper()"
    )
    # With the keys there, they are what is read (so `order.items()` would call the list).
    sent = {"order": {"number": 8, "items": [1], "values": 0}}
    read = deployment(
        """
        - id: order
          type: set
          with:
            items: "{{ trigger.body.order.items | default([]) }}"
            known: "{{ trigger.body.order['values'] is defined }}"
        """
    )
    ex = run(read, history, sent)
    assert ex.status == "succeeded", ex.error
    assert ex.output == {"items": [1], "known": True}


def test_when_error_is_a_failed_step(history: History) -> None:
    dep = deployment(
        """
        - id: greet
          type: set
          with: {a: 1}
          when: trigger.body.flags.vip
          on_error: continue
        - id: fallback
          type: set
          with: {b: "{{ steps.greet.error }}"}
        """
    )
    ex = run(dep, history, {})
    assert ex.status == "succeeded"
    assert ex.steps[0].status == "failed"
    assert ex.output["b"] == "when: trigger.body has no key 'flags' (it is empty)"


def test_rendered_parameters_are_validated(history: History) -> None:
    dep = deployment(
        """
        - id: answer
          type: respond
          with: {status: "{{ trigger.body.code }}"}
        """
    )
    ex = run(dep, history, {"code": "nope"})
    assert ex.status == "failed"
    assert "with.status:" in ex.error and "nope" not in ex.error
    for code in (404, "409"):  # a template gives the step its value, checked as such
        ex = run(dep, history, {"code": code})
        assert ex.status == "succeeded" and ex.output["status"] == int(code)


def test_fail_step_and_respond_output(history: History) -> None:
    failing = deployment(
        """
        - id: stop
          type: fail
          with: {message: "order {{ trigger.body.n }} rejected"}
          retry: {attempts: 3}
        """
    )
    ex = run(failing, history, {"n": 4})
    assert ex.status == "failed" and ex.error == "step stop failed: order 4 rejected"
    assert ex.steps[0].attempts == 1  # a fail step is never retried
    answering = deployment(
        """
        - id: answer
          type: respond
          with: {status: 201, body: {id: "{{ trigger.body.n }}"}}
        - id: after
          type: set
          with: {x: 1}
        """
    )
    ex = run(answering, history, {"n": 4})
    assert ex.output == {"status": 201, "headers": {}, "body": {"id": 4}}


def test_large_outputs_are_truncated_in_the_record_only(server: EchoServer, tmp_path: Path) -> None:
    dep = deployment(
        f"""
        - id: big
          type: http
          with: {{url: "{server.url}/big/200000"}}
        - id: size
          type: transform
          with: {{expression: "length(steps.big.output.text)"}}
        """
    )
    with History(tmp_path / "small.db", max_field_bytes=2048) as small:
        ex = run(dep, small)
        stored = small.get(ex.id)
    assert ex.output == 200000  # the next step saw all of it
    big = stored.steps[0].output
    assert big["truncated"] is True and big["bytes"] > 200000
    assert len(big["preview"]) < 2048


def test_a_json_answer_no_other_reader_could_read_is_kept_as_text(
    server: EchoServer, history: History
) -> None:
    """A service answering NaN, or arrays nested 5,000 deep (once a RecursionError in
    the step), with a JSON content type: the step succeeds with the answer as text."""
    dep = deployment(
        f"""
        - id: nan
          type: http
          with: {{url: "{server.url}/raw-json/0"}}
        - id: deep
          type: http
          with: {{url: "{server.url}/raw-json/5000"}}
        """
    )
    ex = run(dep, history)
    assert ex.status == "succeeded", ex.error
    nan, deep = (history.get(ex.id).steps[i].output for i in (0, 1))
    assert nan["text"] == '{"a": NaN}' and "json" not in nan
    assert deep["text"].startswith("[[[") and "json" not in deep


def test_a_number_json_cannot_hold_is_written_as_null(server: EchoServer, history: History) -> None:
    """`| float` of the text "nan" makes a NaN inside a step. What is sent to a service and
    what is recorded hold null in its place (as JavaScript's JSON.stringify writes it),
    not Python's `NaN`, which no other JSON reader accepts; the steps still see it."""
    dep = deployment(
        f"""
        - id: parse
          type: set
          with: {{amount: "{{{{ trigger.body.amount | float }}}}"}}
        - id: call
          type: http
          with:
            method: POST
            url: "{server.url}/orders"
            json: {{amount: "{{{{ steps.parse.output.amount }}}}", items: [1.5, 2]}}
        """
    )
    ex = run(dep, history, {"amount": "nan"})
    assert ex.status == "succeeded", ex.error
    assert ex.output["json"]["body"] == {"amount": None, "items": [1.5, 2]}
    stored = history.get(ex.id)
    assert stored.steps[0].output == {"amount": None}
    text = json.dumps(stored.to_json(), allow_nan=False)  # standard JSON throughout
    assert "NaN" not in text


def test_a_literal_past_the_largest_float_is_infinity_not_a_name_error(
    history: History,
) -> None:
    """Jinja wrote `{{ 1e999 }}` into the code it generates as the name `inf`; the step
    failed with "NameError: name 'inf' is not defined"."""
    dep = deployment(
        """
        - id: big
          type: set
          with: {one: "{{ 1e999 }}", many: "{{ [-1e999, 2.5] }}", more: "{{ 1e999 > 1 }}"}
        """
    )
    ex = run(dep, history)
    assert ex.status == "succeeded", ex.error
    assert history.get(ex.id).steps[0].output == {"one": None, "many": [None, 2.5], "more": True}


def get(url: str, history: History) -> Any:
    """One execution of a workflow whose only step, `call`, GETs `url`."""
    step = f"""
        - id: call
          type: http
          with: {{url: "{url}", timeout: 5s}}
        """
    return run(deployment(step), history)


def test_unreachable_host_fails_cleanly(history: History) -> None:
    ex = get("http://127.0.0.1:9/nothing", history)
    assert (ex.status, ex.error) == (
        "failed",
        "step call failed: GET http://127.0.0.1:9/nothing: cannot connect to 127.0.0.1:9:"
        " Connection refused",
    )


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/redirect/loop", "too many redirects (10; a redirect loop?)"),
        ("/redirect/ftp://127.0.0.1/x", "redirected to ftp://127.0.0.1/x, which is not an http"),
        ("/broken/none", "the server closed the connection without a complete answer"),
        ("/broken/short", "the response ended before its body did: Not enough data to satisfy"),
        ("/broken/garbage", "the reply is not valid HTTP: Bad status line"),
    ],
)
def test_a_broken_answer_fails_in_one_plain_line(
    server: EchoServer, history: History, path: str, says: str
) -> None:
    url = server.url + path  # /redirect/loop sends to "loop", itself
    ex = get(url, history)
    assert ex.status == "failed" and ex.error is not None
    assert ex.error.startswith(f"step call failed: GET {url}: {says}"), ex.error
    assert "\n" not in ex.error


@pytest.fixture
def tls_server() -> Iterator[tuple[EchoServer, trustme.CA]]:
    """The echo server over TLS, its certificate from a CA of its own for 127.0.0.1."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    for server in serve(context):
        yield server, ca


def test_an_untrusted_certificate_fails_cleanly(
    tls_server: tuple[EchoServer, trustme.CA], history: History
) -> None:
    """A TLS server on 127.0.0.1 whose certificate comes from a CA the system does not
    trust: the step fails saying so, without aiohttp's wrapping."""
    server, _ = tls_server
    port = server.server_address[1]
    ex = get(f"{server.url}/x", history)
    assert (ex.status, ex.error) == (
        "failed",
        f"step call failed: GET https://127.0.0.1:{port}/x: the TLS certificate of"
        f" 127.0.0.1:{port} is not trusted: unable to get local issuer certificate",
    )


def test_a_private_ca_is_trusted_through_ssl_cert_file(
    tls_server: tuple[EchoServer, trustme.CA], tmp_path: Path
) -> None:
    """As the README says: a process started with SSL_CERT_FILE naming a bundle trusts
    the authorities in it (aiohttp reads it once, on import, so a new process)."""
    server, ca = tls_server
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    code = (
        "import asyncio\n"
        "from loomgit.httpclient import Client, Request\n"
        "async def main():\n"
        "    client = Client()\n"
        f"    out = await client.send(Request('GET', '{server.url}/status/200', {{}}, {{}}))\n"
        "    await client.close()\n"
        "    print(out['status'], out['json'])\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "200 {'status': 200}\n"), done.stderr


def test_secrets_are_redacted_everywhere(
    server: EchoServer, history: History, tmp_path: Path
) -> None:
    dep = deployment(
        f"""
        - id: call
          type: http
          with:
            url: "{server.url}/echo"
            headers: {{Authorization: "Bearer {{{{ credentials.api.token }}}}"}}
            query: {{key: "{{{{ credentials.api.token }}}}"}}
        - id: note
          type: log
          with: {{message: "token is {{{{ credentials.api.token }}}}"}}
        - id: copy
          type: set
          with: {{leak: "{{{{ credentials.api.token }}}}"}}
        - id: stop
          type: fail
          with: {{message: "refused {{{{ credentials.api.token }}}}"}}
        """,
        credentials={"api": {"token": CANARY}},
    )
    ex = run(dep, history)
    assert ex.status == "failed"
    # The server did receive the real token: redaction is only in what is recorded.
    echoed = server.hits["/echo"]
    assert echoed == 1
    stored = history.get(ex.id)
    text = repr(ex) + repr(stored) + repr(stored.to_json())
    assert CANARY not in text
    assert "[redacted]" in text
    history.close()
    for path in tmp_path.glob("history.db*"):
        assert CANARY.encode() not in path.read_bytes()


def test_validate_knows_what_the_trigger_holds() -> None:
    """`validate` checks `trigger.X` against this list (LG331): it must be what a running
    step sees."""
    from loomgit import templates

    assert tuple(TriggerEvent("webhook").context()) == templates.TRIGGER_FIELDS

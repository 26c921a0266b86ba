"""End to end: the real daemon on a free port against a real repository."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import hmac
import http.client
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    HELLO,
    AgeKey,
    Repo,
    Result,
    commit_all,
    descendants,
    git,
    install_steps,
    promoted,
    put_everywhere,
    state_yaml,
)
from echo_server import serve
from pipeline import ENVS, Pipeline

from loomgit import sops
from loomgit.documents import PARALLEL_MIN
from loomgit.errors import NO_API_TOKENS
from loomgit.history import History
from loomgit.httphead import MAX_HEAD_BYTES, TOO_LARGE
from loomgit.ingress import KEY_TOO_LONG, MAX_KEY_LENGTH, UNRECORDED, authorized, signed
from loomgit.records import Execution, StepRecord, new_id, unix

Cli = Callable[..., Result]
TOKEN = "test-token-0123456789abcdef"  # a throwaway test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOMGIT = [sys.executable, "-m", "loomgit"]


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    url: str
    banner: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def request(self, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """The status and the body of the answer (see `answer`)."""
        code, body, _ = self.answer(*args, **kwargs)
        return code, body

    def answer(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Any]:
        """The status, the body (parsed when JSON) and the headers of the answer."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, _json_or_text(resp.read()), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, _json_or_text(exc.read()), exc.headers

    def reconcile(self) -> dict[str, dict[str, Any]]:
        code, body = self.request(
            "POST", "/api/v1/reconcile", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert code == 200, body
        return {e["name"]: e for e in body}

    def finished(self, ident: str) -> dict[str, Any]:
        for _ in range(200):
            code, ex = self.request("GET", f"/api/v1/executions/{ident}", headers=AUTH)
            if code == 200 and ex["status"] not in ("queued", "running"):
                return ex  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"execution {ident} did not finish")

    def executions(self, **query: str) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        code, body = self.request("GET", f"/api/v1/executions?{qs}", headers=AUTH)
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        return self.log


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data or b"null")
    except ValueError:
        return data.decode()


Start = Callable[..., Daemon]


@pytest.fixture
def start(tmp_path: Path, age_key: AgeKey) -> Iterator[Start]:
    started: list[subprocess.Popen[str]] = []

    def run(
        repo: Repo,
        *extra: str,
        state: Path | None = None,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
        key_dir: bool = False,
        keyed: tuple[str, ...] = ("development", "staging", "production"),
    ) -> Daemon:
        keys = [a for env in keyed
                for a in ("--age-key-file", f"{env}={age_key.path}")]  # fmt: skip
        if key_dir:  # the same key as ENV.agekey in a folder, as the demo keys are
            folder = tmp_path / "keys"
            folder.mkdir(exist_ok=True)
            for name in ("development", "staging", "production"):
                (folder / f"{name}.agekey").write_bytes(age_key.path.read_bytes())
                (folder / f"{name}.agekey").chmod(0o600)
            keys = ["--age-key-dir", str(folder)]
        log_path = tmp_path / f"daemon-{len(started)}.log"
        environ = {**os.environ, "LOOMGIT_API_TOKENS": TOKEN, **(env or {})}
        if state is not None:
            environ["LOOMGIT_STATE_DIR"] = str(state)
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [*LOOMGIT, "serve", "--repo", str(repo.path), "--port", "0", "--interval", "1h",
                 *keys, *extra],
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                env=environ,
                preexec_fn=preexec,
            )  # fmt: skip
        started.append(proc)
        deadline = time.monotonic() + 30
        banner = ""
        while time.monotonic() < deadline and proc.poll() is None:
            banner = next(
                (ln for ln in log_path.read_text().splitlines() if ln.startswith("listening on ")),
                "",
            )
            if banner:
                break
            time.sleep(0.05)
        assert banner, log_path.read_text()
        return Daemon(proc, banner.split()[-1], banner, log_path)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_webhooks_answer_only_where_active(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo, key_dir=True)  # the keys from a folder, as in the README
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Ada"})
    assert code == 202 and body["environment"] == "staging"
    ex = daemon.finished(body["execution"])
    assert ex["status"] == "succeeded" and ex["version"] == 1
    assert ex["steps"][1]["logs"][0]["message"] == "Hello, Ada"
    assert ex["trigger"]["headers"]["content-type"] == "application/json"  # names lower case
    # A form (Slack's slash commands, Twilio) arrives as its fields, as the query's do.
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    sent = b"name=Grace+H&city=M%C3%BCnchen&empty=&name=Ada+L"
    code, body = daemon.request("POST", "/hooks/staging/hello?a=1&a=2", raw=sent, headers=form)
    ex_form = daemon.finished(body["execution"])
    assert ex_form["trigger"]["body"] == {"name": "Ada L", "city": "München", "empty": ""}
    assert ex_form["trigger"]["query"] == {"a": "2"}
    assert ex_form["steps"][1]["logs"][0]["message"] == "Hello, Ada L"
    text = {"Content-Type": "text/plain"}
    code, body = daemon.request("POST", "/hooks/staging/hello", raw=b"name=Bo", headers=text)
    assert daemon.finished(body["execution"])["trigger"]["body"] == "name=Bo"
    for path in ("/hooks/production/hello", "/hooks/development/hello", "/hooks/staging/nope"):
        assert daemon.request("POST", path, {})[0] == 404
    listed = "environments: development, staging, production"
    assert daemon.request("POST", "/hooks/qa/hello", {}) == (
        404,
        {"error": f"no environment qa; {listed}"},
    )
    # A mistyped or shortened name is answered with the one likely meant; a name as long
    # as the path allows is a plain 404.
    meant = f"no environment stagng; did you mean staging? {listed}"
    assert daemon.request("POST", "/hooks/stagng/hello", {}) == (404, {"error": meant})
    code, body = daemon.request("POST", "/hooks/prod/hello", {})
    assert body["error"].startswith("no environment prod; did you mean production?")
    code, body = daemon.request("POST", "/hooks/" + "staging" * 2000 + "/hello", {})
    assert code == 404 and "did you mean" not in body["error"]
    where = "no environment in the path; webhooks are at /hooks/ENV/PATH"
    assert daemon.request("POST", "/hooks/", {}) == (404, {"error": where})
    code, refusal, headers = daemon.answer("GET", "/hooks/staging/hello")  # another method
    assert code == 405 and headers["Allow"] == "POST"
    assert refusal == {"error": "/hello in staging accepts POST, not GET"}
    method = 'loomgit_webhook_refused_total{environment="staging",reason="method"}'
    assert _metric(daemon, method) == "1.0"
    assert daemon.request("GET", "/hooks/development/hello")[0] == 404  # not active there
    api = ("POST", "/api/v1/workflows/hello/executions", {"environment": "staging"})
    assert daemon.request(*api, headers=AUTH) == (
        404,
        {"error": "hello has no api trigger in staging; its triggers: webhook, schedule"},
    )
    assert len(daemon.executions()) == 3  # none refused

    assert cli("deactivate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon.reconcile()
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Bo"})[0] == 404


def test_environments_serves_those_named_in_the_pipelines_order(repo: Repo, start: Start) -> None:
    put_everywhere(repo, HELLO, {"development": True, "staging": True, "production": True})
    daemon = start(repo, "--environments", "production, staging,,production")
    _, envs = daemon.request("GET", "/api/v1/environments")
    assert [e["name"] for e in envs] == ["staging", "production"]
    # Times as the executions give them: UTC, ISO 8601.
    ready = envs[0]["conditions"][0]
    assert ready["type"] == "Ready" and ready["status"] == "True"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ready["last_transition"])
    assert daemon.request("POST", "/hooks/production/hello", {})[0] == 202
    code, body = daemon.request("POST", "/hooks/development/hello", {})
    served = "development is not served here; this daemon serves staging, production"
    assert (code, body) == (404, {"error": served})
    assert daemon.request("GET", "/readyz?environments=staging,production")[0] == 200


# Two packages adding step types: `tag` installed before the daemon starts, `shout` after.
TAG_STEP = """
from types import SimpleNamespace
from pydantic import BaseModel

class Params(BaseModel):
    text: str

tag = SimpleNamespace(params=Params, run=lambda params, ctx: {"tagged": f"#{params.text}"})
"""
SHOUT_STEP = TAG_STEP.replace("tag =", "shout =").replace(
    'f"#{params.text}"', "params.text.upper()"
)


def _using(name: str, step_type: str) -> str:
    return (
        "apiVersion: loomgit/v1\nkind: Workflow\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  triggers: [{{type: webhook, path: {name}}}]\n"
        f"  steps:\n    - {{id: s, type: {step_type}, with: {{text: '{TEXT}'}}}}\n"
    )


TEXT = "{{ trigger.body.text }}"


def test_a_step_type_installed_beside_the_daemon_is_taken_at_its_next_cycle(
    repo: Repo, start: Start, tmp_path: Path
) -> None:
    """`pip install` of a package adding a step type, beside a running daemon: the commit
    that uses the type, refused until then (LG321, the last good state serving), applies
    at the next cycle without a restart (its workflows parsed in worker processes, as a
    large change's are), and runs in runners that had read the step types before the
    package came."""
    site = tmp_path / "site"
    install_steps(site, "loomgit_tag_test", TAG_STEP, {"tag": "loomgit_tag_test:tag"})
    repo.write(repo.wf("development", "tagged"), _using("tagged", "tag"))
    repo.write(
        "environments/development/environment.yaml",
        state_yaml("development", {"tagged": {"active": "true"}}),
    )
    commit_all(repo.path, "tagged")
    daemon = start(repo, "--runners", "1", env={"PYTHONPATH": str(site)})
    code, body = daemon.request("POST", "/hooks/development/tagged", {"text": "a"})
    assert code == 202, body
    assert daemon.finished(body["execution"])["output"] == {"tagged": "#a"}  # runner read them
    repo.write(repo.wf("development", "loud"), _using("loud", "shout"))
    for i in range(PARALLEL_MIN):  # enough for the daemon to parse them in worker processes
        repo.write(repo.wf("development", f"loud-{i}"), _using(f"loud-{i}", "shout"))
    repo.write(
        "environments/development/environment.yaml",
        state_yaml("development", {"tagged": {"active": "true"}, "loud": {"active": "true"}}),
    )
    head = commit_all(repo.path, "loud")
    refused = daemon.reconcile()["development"]
    assert refused["conditions"][0]["reason"] == "ValidationFailed"
    assert "unknown step type 'shout'" in refused["conditions"][0]["message"]
    assert (
        "; hint: a step type a package adds must be installed where `loomgit serve` runs (the"
        " next cycle takes it, no restart); `loomgit validate --rev"
    ) in refused["conditions"][0]["message"]
    assert daemon.request("POST", "/hooks/development/loud", {"text": "b"})[0] == 404
    install_steps(site, "loomgit_shout_test", SHOUT_STEP, {"shout": "loomgit_shout_test:shout"})
    applied = daemon.reconcile()["development"]
    assert applied["conditions"][0]["reason"] == "Ready", applied
    assert applied["commit"] == head
    for path, output in (("loud", {"tagged": "B"}), ("tagged", {"tagged": "#b"})):
        code, body = daemon.request("POST", f"/hooks/development/{path}", {"text": "b"})
        assert code == 202, body
        ex = daemon.finished(body["execution"])
        assert ex["status"] == "succeeded" and ex["output"] == output, ex


BAD_EDITS = {
    "syntax": "steps: [oops",
    # Nested 100,000 levels deep: the C parser alone would crash the daemon on it.
    "nesting": "steps: " + "[" * 100_000 + "]" * 100_000 + "\n  old:",
}


@pytest.mark.parametrize("edit", sorted(BAD_EDITS))
def test_a_bad_commit_leaves_the_last_good_state_running(
    repo: Repo, cli: Cli, start: Any, edit: str
) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    envs = daemon.reconcile()
    good = envs["staging"]["last_applied_commit"]
    repo.write(repo.wf("staging"), HELLO.replace("steps:", BAD_EDITS[edit]))
    bad = commit_all(repo.path, "hand edit")
    envs = daemon.reconcile()
    staging = envs["staging"]
    assert staging["last_attempted_commit"] == bad
    assert staging["last_applied_commit"] == good
    assert staging["conditions"][0]["reason"] == "ValidationFailed"
    said = staging["conditions"][0]["message"]
    assert "staging/workflows/hello.yaml" in said
    first, hint = said.split("; hint: ")
    assert hint.startswith(f"`loomgit validate --rev {bad[:12]} --env staging` lists "), said
    listed = cli("validate", "--rev", bad[:12], "--env", "staging", "--repo", repo.path)
    assert listed.code == 1 and first.split(" (and ")[0] in listed.out, listed.out
    daemon.reconcile()  # the same failure again is not logged twice
    refused = [ln for ln in daemon.log.splitlines() if "not applied environment=staging" in ln]
    assert len(refused) == 1 and "reason=ValidationFailed" in refused[0], daemon.log
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Cy"})
    assert code == 202
    assert daemon.finished(body["execution"])["status"] == "succeeded"
    git(repo.path, "reset", "-q", "--hard", good)  # back to what runs: Ready again
    staging = daemon.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "Ready"
    assert staging["last_attempted_commit"] == good


def test_a_restart_onto_a_bad_commit_serves_what_was_applied_before(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    """A running daemon keeps its last good state past a bad commit; killed and started
    again on that commit, it must not lose it."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    state = tmp_path / "state"
    daemon = start(repo, state=state)
    good = daemon.reconcile()["staging"]["last_applied_commit"]
    repo.write(repo.wf("staging"), HELLO.replace("steps:", BAD_EDITS["syntax"]))
    bad = commit_all(repo.path, "hand edit")
    assert daemon.reconcile()["staging"]["last_applied_commit"] == good
    daemon.stop(signal.SIGKILL)

    again = start(repo, state=state)
    code, body = again.request("GET", "/readyz?environments=staging")
    assert code == 200 and body["environments"]["staging"]["serving"] == good, body
    staging = again.reconcile()["staging"]
    assert staging["last_applied_commit"] == good and staging["last_attempted_commit"] == bad
    assert staging["conditions"][0]["reason"] == "ValidationFailed"
    assert staging["events"][0]["reason"] == "RestoredLastApplied"
    assert good[:12] in staging["events"][0]["message"], staging
    code, body = again.request("POST", "/hooks/staging/hello", {"name": "Ida"})
    assert code == 202 and again.finished(body["execution"])["version"] == 1
    assert "RestoredLastApplied" in again.log

    repo.write(repo.wf("staging"), HELLO.replace("Hello", "Hi"))
    fixed = commit_all(repo.path, "fix")
    staging = again.reconcile()["staging"]
    assert staging["last_applied_commit"] == fixed and staging["conditions"][0]["reason"] == "Ready"
    again.stop()
    record = json.loads((state / "applied.json").read_text())
    assert record["repositories"][str(repo.path.resolve())]["staging"]["commit"] == fixed


def test_a_commit_applied_before_a_restart_is_served_though_it_no_longer_validates(
    repo: Repo, start: Start, tmp_path: Path
) -> None:
    """An upgrade that checks more (here: an output key a `set` step never sets, which
    renders its default) must not take down what ran before the restart: the commit
    the older loomgit applied is served again, and the status says why no later one
    would be. A later commit must validate."""
    lax = HELLO.replace("steps.greet.output.text }}", "steps.greet.output.txt | default('hi') }}")
    bad = put_everywhere(repo, lax, {"staging": True})
    state = tmp_path / "state"
    applied = {"staging": {"commit": bad, "applied_at": 1.0}}  # as the older one recorded
    (state).mkdir()
    (state / "applied.json").write_text(
        json.dumps({"version": 1, "repositories": {str(repo.path.resolve()): applied}})
    )
    daemon = start(repo, state=state)
    staging = daemon.reconcile()["staging"]
    assert staging["last_applied_commit"] == bad
    assert staging["conditions"][0]["reason"] == "ValidationFailed"
    assert "has no 'txt' (did you mean 'text'?)" in staging["conditions"][0]["message"]
    assert staging["events"][0]["reason"] == "RestoredLastApplied"
    assert "no longer validates" in staging["events"][0]["message"], staging
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Ulf"})
    assert code == 202 and daemon.finished(body["execution"])["status"] == "succeeded"
    # Without that record (a first start), the commit is refused as any other.
    assert (
        start(repo, state=tmp_path / "fresh").reconcile()["staging"]["last_applied_commit"] is None
    )
    fixed = put_everywhere(repo, HELLO, {"staging": True})
    staging = daemon.reconcile()["staging"]
    assert staging["last_applied_commit"] == fixed and staging["conditions"][0]["reason"] == "Ready"


def test_a_restart_without_a_record_of_what_was_applied_serves_nothing_bad(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    """A record that cannot be read, or names a commit the repository no longer has,
    is logged and otherwise ignored: the bad commit is still not applied."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    state = tmp_path / "state"
    state.mkdir()
    repo.write(repo.wf("staging"), HELLO.replace("steps:", BAD_EDITS["syntax"]))
    commit_all(repo.path, "hand edit")
    gone = "0" * 40
    records = {
        "{not json": "applied commits not read",
        json.dumps({"version": 1, "repositories": {str(repo.path.resolve()): {
            "staging": {"commit": gone, "applied_at": 1.0}}}}): "last applied commit not restored",
    }  # fmt: skip
    for text, logged in records.items():
        (state / "applied.json").write_text(text)
        daemon = start(repo, state=state)
        staging = daemon.reconcile()["staging"]
        assert staging["last_applied_commit"] is None
        assert staging["conditions"][0]["reason"] == "ValidationFailed"
        assert daemon.request("POST", "/hooks/staging/hello", {})[0] == 503
        daemon.stop()
        assert logged in daemon.log and "Traceback" not in daemon.log


@pytest.mark.parametrize("damage", ["broken", "deleted"])
def test_a_broken_loomgit_yaml_is_survived_running_and_restarted(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path, damage: str
) -> None:
    """loomgit.yaml broken or deleted in a commit: a running daemon keeps serving and
    says why (ReadFailed); killed and started again on that commit, it serves what it
    applied before instead of refusing to start, and applies the fix as any commit."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    state = tmp_path / "state"
    daemon = start(repo, state=state)
    good = daemon.reconcile()["staging"]["last_applied_commit"]
    config = (repo.path / "loomgit.yaml").read_text()
    if damage == "broken":
        (repo.path / "loomgit.yaml").write_text(config + "layout: sideways\n")
        why = "error[LG500]"
    else:
        (repo.path / "loomgit.yaml").unlink()
        why = "no loomgit.yaml in"
    bad = commit_all(repo.path, f"{damage} loomgit.yaml")
    staging = daemon.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "ReadFailed"
    assert why in staging["conditions"][0]["message"]
    assert (staging["last_attempted_commit"], staging["last_applied_commit"]) == (bad, good)
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Al"})[0] == 202
    daemon.stop(signal.SIGKILL)

    again = start(repo, state=state)
    assert "HEAD not served; starting from the commit applied before" in again.log
    code, body = again.request("GET", "/readyz?environments=staging")
    assert code == 200 and body["environments"]["staging"]["serving"] == good, body
    staging = again.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "ReadFailed"
    assert (staging["last_attempted_commit"], staging["last_applied_commit"]) == (bad, good)
    assert [e["reason"] for e in staging["events"]] == ["RestoredLastApplied"]
    code, body = again.request("POST", "/hooks/staging/hello", {"name": "Ida"})
    assert code == 202 and again.finished(body["execution"])["status"] == "succeeded"

    (repo.path / "loomgit.yaml").write_text(config)
    fixed = commit_all(repo.path, "fix loomgit.yaml")
    staging = again.reconcile()["staging"]
    assert (staging["last_applied_commit"], staging["conditions"][0]["reason"]) == (fixed, "Ready")
    assert "Traceback" not in again.stop()


def test_a_restart_onto_a_commit_that_drops_a_served_environment_keeps_serving_it(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    """`--environments staging` and a commit whose loomgit.yaml no longer lists staging:
    exit 2 on a restart would stop staging until someone changes the daemon's options."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    state = tmp_path / "state"
    daemon = start(repo, "--environments", "staging", state=state)
    good = daemon.reconcile()["staging"]["last_applied_commit"]
    config = repo.path / "loomgit.yaml"
    config.write_text(config.read_text().replace("  - name: staging\n", ""))
    commit_all(repo.path, "staging goes")
    assert daemon.reconcile()["staging"]["conditions"][0]["reason"] == "ReadFailed"
    daemon.stop(signal.SIGKILL)

    again = start(repo, "--environments", "staging", state=state)
    staging = again.reconcile()["staging"]
    assert staging["last_applied_commit"] == good
    assert staging["conditions"][0]["reason"] == "ReadFailed"
    assert "unknown environment 'staging' in --environments" in staging["conditions"][0]["message"]
    assert again.request("POST", "/hooks/staging/hello", {"name": "Bo"})[0] == 202
    assert "Traceback" not in again.stop()


def test_a_first_start_needs_a_readable_commit(repo: Repo, tmp_path: Path) -> None:
    """With nothing applied before to fall back on, serve exits 2 and says why. It reads
    loomgit.yaml as committed, as it serves it, not as the work tree has it."""

    def serve(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # a daemon that starts instead is stopped by the timeout
            [*LOOMGIT, "serve", "--repo", str(path), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LOOMGIT_STATE_DIR": str(tmp_path / "state")},
        )

    unborn = tmp_path / "unborn"
    unborn.mkdir()
    git(unborn, "init", "-q")
    (unborn / "loomgit.yaml").write_bytes((repo.path / "loomgit.yaml").read_bytes())
    proc = serve(unborn)
    assert proc.returncode == 2 and "has no commits yet" in proc.stderr, proc.stderr
    config = (repo.path / "loomgit.yaml").read_text()
    (repo.path / "loomgit.yaml").write_text(config + "layout: sideways\n")
    commit_all(repo.path, "break loomgit.yaml")
    (repo.path / "loomgit.yaml").write_text(config)  # fixed, but not committed
    proc = serve(repo.path)
    assert proc.returncode == 2 and "error[LG500]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_environment_failing_at_start_up_leaves_the_daemon_ready(
    repo: Repo, cli: Cli, start: Start
) -> None:
    """A restart with a bad staging commit must not take production out of the load
    balancer; a rollout gate asks for the environments it needs."""
    assert cli("activate", "hello", "--env", "production", "--repo", repo.path).code == 0
    repo.write(repo.wf("staging"), HELLO.replace("steps:", BAD_EDITS["syntax"]))
    commit_all(repo.path, "break staging")
    daemon = start(repo)
    code, body = daemon.request("GET", "/readyz")
    assert code == 200, body
    assert body["environments"]["staging"] == {"serving": None, "reason": "ValidationFailed"}
    assert body["environments"]["production"]["reason"] == "Ready"
    assert body["environments"]["production"]["serving"]
    assert daemon.request("GET", "/readyz?environments=production")[0] == 200
    code, body = daemon.request("GET", "/readyz?environments=production,staging")
    assert code == 503 and body == {"error": "not serving: staging (ValidationFailed)"}
    code, body = daemon.request("GET", "/readyz?environments=qa")
    assert code == 400 and "no environment qa here" in body["error"]
    assert daemon.request("POST", "/hooks/production/hello", {"name": "Ed"})[0] == 202


def test_readiness_waits_for_the_first_reconcile_and_for_an_environment_that_serves() -> None:
    from types import SimpleNamespace

    from loomgit.ingress import Refused
    from loomgit.reconcile import EnvStatus
    from loomgit.server import readiness

    staging, production = EnvStatus("staging"), EnvStatus("production")
    staging.set_ready(False, "DecryptionFailed", "no key", 0.0)
    production.set_ready(False, "ValidationFailed", "a newer commit is bad", 0.0)
    rec = SimpleNamespace(
        names=["staging", "production"],
        status={"staging": staging, "production": production},
        served={"production": SimpleNamespace(commit="c0ffee")},  # still serves the last good
        read_error=None,
    )
    daemon = SimpleNamespace(reconciler=rec, reconciled=False)

    def refused(wanted: list[str] | None = None) -> Refused:
        with pytest.raises(Refused) as caught:
            readiness(daemon, wanted)  # type: ignore[arg-type]
        return caught.value

    assert str(refused()) == "the first reconcile has not ended"
    assert refused().response().headers["Retry-After"]
    daemon.reconciled = True
    assert readiness(daemon)["environments"] == {  # type: ignore[arg-type]
        "staging": {"serving": None, "reason": "DecryptionFailed"},
        "production": {"serving": "c0ffee", "reason": "ValidationFailed"},
    }
    assert str(refused(["staging"])) == "not serving: staging (DecryptionFailed)"
    assert refused(["qa"]).status == 400
    rec.served = {}
    assert str(refused()) == (
        "not serving: staging (DecryptionFailed), production (ValidationFailed)"
    )
    rec.names, rec.status = [], {}  # the first fetch failed before loomgit.yaml was read
    assert str(refused()) == "the repository has not been read yet"
    rec.read_error = "loomgit.yaml:3:1: error[LG500]: …"  # the answer says why
    assert str(refused()) == "the repository has not been read yet: " + rec.read_error


def test_a_first_read_that_fails_says_why(repo: Repo, tmp_path: Path) -> None:
    """Before any environment is known, the reason is kept for /readyz and the log."""
    from loomgit.reconcile import Reconciler

    unborn = tmp_path / "unborn"
    unborn.mkdir()
    git(unborn, "init", "-q")
    (unborn / "loomgit.yaml").write_bytes((repo.path / "loomgit.yaml").read_bytes())
    reconciler = Reconciler(unborn, {})
    assert reconciler.cycle() == {}
    assert reconciler.read_error == (
        f"{unborn.resolve()} has no commits yet; "
        "hint: commit loomgit.yaml and the environments' files first"
    )
    commit_all(unborn, "the pipeline, with no environments yet")
    status = reconciler.cycle()
    assert (
        reconciler.read_error is None
        and status["staging"].conditions[0].reason == "ValidationFailed"
    )


def test_a_tampered_credential_file_is_refused(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "production", "--repo", repo.path).code == 0
    daemon = start(repo)
    path = repo.path / "credentials.sops.yaml"
    text = path.read_text()
    start_of_value = text.index("ENC[AES256_GCM,data:") + len("ENC[AES256_GCM,data:")
    flipped = "A" if text[start_of_value] != "A" else "B"
    path.write_text(text[:start_of_value] + flipped + text[start_of_value + 1 :])
    commit_all(repo.path, "tamper")
    envs = daemon.reconcile()
    assert envs["production"]["conditions"][0]["reason"] == "DecryptionFailed"
    said = envs["production"]["conditions"][0]["message"]
    assert "integrity check" in said
    assert said.endswith("; hint: restore it from git history, or re-encrypt it with loomgit")
    assert daemon.request("POST", "/hooks/production/hello", {"name": "Di"})[0] == 202


API = HELLO.replace("    - type: webhook\n      path: hello\n", "    - type: api\n")


def test_the_api_defaults_to_the_last_environment(repo: Repo, start: Any) -> None:
    for env in ("development", "staging", "production"):
        repo.write(repo.wf(env), API)
    for env, source in (("staging", "development"), ("production", "staging")):
        repo.write(
            f"environments/{env}/environment.yaml",
            state_yaml(env, {"hello": promoted(API, 1, source, repo.source_commit, True)}),
        )
    commit_all(repo.path, "api trigger, active")
    daemon = start(repo)
    path = "/api/v1/workflows/hello/executions"
    assert daemon.request("POST", path, {"input": {"name": "Ed"}})[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = {"Authorization": "Bearer wrong"}
    assert daemon.request("POST", path, {"input": {}}, headers=bad)[0] == 401
    for wrong in (f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
        assert (
            daemon.request("GET", "/api/v1/executions", headers={"Authorization": wrong})[0] == 401
        )
    lower = {"Authorization": f"bearer {TOKEN}"}  # RFC 9110: the scheme in any case
    assert daemon.request("GET", "/api/v1/executions", headers=lower)[0] == 200
    code, body = daemon.request("POST", path, {"input": {"name": "Ed"}}, headers=auth)
    assert code == 202 and body["environment"] == "production"
    ex = daemon.finished(body["execution"])
    assert ex["environment"] == "production" and ex["trigger"]["type"] == "api"
    code, body = daemon.request(
        "POST", path, {"environment": "staging", "input": {"name": "Fa"}}, headers=auth
    )
    assert code == 202 and body["environment"] == "staging"
    code, body = daemon.request("POST", path, {"environment": "development"}, headers=auth)
    told = "hello is not active in development; it has an active api trigger in staging, production"
    assert (code, body) == (404, {"error": told})
    code, body = daemon.request("POST", path, {"environment": "stagin"}, headers=auth)
    assert code == 404 and "did you mean staging?" in body["error"]
    code, body = daemon.request("POST", "/api/v1/workflows/helo/executions", {}, headers=auth)
    told = "no workflow helo in production; did you mean hello? (the default environment, the last)"
    assert (code, body) == (404, {"error": told})
    # As `curl -d` sends it (a form, says its content type), the body is still JSON.
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    code, body = daemon.request("POST", path, raw=b'{"input": {"name": "Cu"}}', headers=form)
    assert code == 202 and body["environment"] == "production"
    assert daemon.finished(body["execution"])["trigger"]["body"] == {"name": "Cu"}
    for sent, says in (
        (b'{"inputs": {"name": "Ty"}}', "unknown key 'inputs': the body is {"),
        (b'{"environment": 5}', "environment is the name of an environment, not 5"),
        (b'{"environment": ""}', 'environment is the name of an environment, not ""'),
        (b'{"environment": [' + b"1, " * 999 + b"1]}", "environment is the name of an"),
        (b'["production"]', 'the body is {"environment": NAME, "input": ANYTHING}'),
        (b"environment=production", "the body is not valid JSON"),
    ):
        code, body = daemon.request("POST", path, raw=sent, headers=form)
        assert code == 400 and body["error"].startswith(says), (sent, body)
        assert len(body["error"]) < 100, body
    # Executions hold what started them and what their steps answered: read with a
    # token only, as they are started.
    for read in (f"/api/v1/executions/{ex['id']}", "/api/v1/executions", "/api/v1/executions/0"):
        assert daemon.request("GET", read)[0] == 401
        assert daemon.request("GET", read, headers=bad)[0] == 401
    # Reading the history with bad input: a 4xx that says why, and never where the
    # daemon keeps its state.
    unknown = "0" * 26
    code, body = daemon.request("GET", f"/api/v1/executions/{unknown}", headers=auth)
    assert (code, body) == (404, {"error": f"no execution {unknown}"})
    code, body = daemon.request("GET", "/api/v1/executions/" + "A" * 5000, headers=auth)
    assert code == 404 and body["error"] == f"'{'A' * 26}…' is not an execution id"
    for query, message in (
        ("limit=1e9", "limit is a whole number"),
        ("limit=0", "limit is a whole number from 1"),
        ("limit=-5", "limit is a whole number from 1"),
        ("since=nan", "since takes a Unix time, an age such as 30m"),
        ("since=inf", "since takes a Unix time, an age such as 30m"),
        ("since=yesterday", "since takes a Unix time, an age such as 30m"),
    ):
        code, body = daemon.request("GET", f"/api/v1/executions?{query}", headers=auth)
        assert code == 400 and body["error"].startswith(message), (query, body)
    # Left to its default, the call says where the workflow does answer.
    repo.write(
        "environments/production/environment.yaml",
        state_yaml("production", {"hello": promoted(API, 1, "staging", repo.source_commit)}),
    )
    commit_all(repo.path, "hello inactive in production")
    assert daemon.reconcile()["production"]["conditions"][0]["reason"] == "Ready"
    code, body = daemon.request("POST", path, {"input": {}}, headers=auth)
    told = (
        "hello is not active in production (the default environment, the last); it has an"
        ' active api trigger in staging: give "environment": "staging"'
    )
    assert (code, body) == (404, {"error": told})


def test_the_api_default_is_named_when_this_daemon_does_not_serve_it(
    repo: Repo, start: Start
) -> None:
    put_everywhere(repo, API, {"development": True, "staging": True})
    daemon = start(repo, "--environments", "development,staging")
    path = "/api/v1/workflows/hello/executions"
    code, body = daemon.request("POST", path, {"input": {}}, headers=AUTH)
    assert code == 404
    assert body["error"] == (
        "the environment defaults to production, which this daemon does not serve; "
        'give "environment": one of development, staging'
    )
    code, body = daemon.request("POST", path, {"environment": "staging"}, headers=AUTH)
    assert code == 202 and body["environment"] == "staging"


def test_the_history_is_read_page_by_page_through_the_link_header(repo: Repo, start: Start) -> None:
    """A full page links to the next (rel=next, as GitHub's API does); following the
    links lists every execution once, in the order of one long page."""
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo)
    for n in range(7):
        assert daemon.request("POST", "/hooks/staging/hello", {"name": f"N{n}"})[0] == 202
    every = [ex["id"] for ex in daemon.executions(environment="staging")]
    assert len(every) == 7
    paged, path, links = [], "/api/v1/executions?environment=staging&limit=3", 0
    while path:
        code, page, headers = daemon.answer("GET", path, headers=AUTH)
        assert code == 200, page
        paged += [ex["id"] for ex in page]
        link = headers.get("Link")
        path = link and link[1:].partition(">")[0].removeprefix(daemon.url)
        links += bool(link)
    assert paged == every and links == 2  # pages of 3, 3 and 1: the last has no link
    # `since` as the CLI's --since takes it (an age, an ISO date), or a Unix time.
    later = str(time.time() + 3600)
    for since, found in (("1h", every), ("2999-01-01", []), ("2000-01-01T00:00Z", every)):
        assert [ex["id"] for ex in daemon.executions(since=since)] == found, since
    assert daemon.executions(since=later) == []
    code, body = daemon.request("GET", "/api/v1/executions?before=" + "0" * 26, headers=AUTH)
    assert code == 400 and body["error"].startswith(f"no execution {'0' * 26} to list")
    code, body = daemon.request("GET", "/api/v1/executions?before=" + "A" * 5000, headers=AUTH)
    assert (code, body) == (400, {"error": f"'{'A' * 26}…' is not an execution id"})
    for name in ("environment", "workflow"):  # `?environment=$ENV`, the variable unset
        code, body = daemon.request("GET", f"/api/v1/executions?{name}=", headers=AUTH)
        assert (code, body) == (400, {"error": f"{name} is empty; leave it out, or name one"})
    # A name loomgit.yaml does not list, with nothing recorded under it, is a typo.
    code, body = daemon.request("GET", "/api/v1/executions?environment=stagign", headers=AUTH)
    assert (code, body["error"]) == (
        400,
        "unknown environment 'stagign': did you mean staging? "
        "environments: development, staging, production",
    )


def test_the_summary_counts_each_version_through_the_daemon(
    repo: Repo, cli: Cli, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/api/v1/executions/summary` and `loomgit executions summary --server`: how each
    workflow version fared, read with a token, filtered as the listing is; its gate
    exits 1 naming the version that fails too often."""
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo)
    sent = [daemon.request("POST", "/hooks/staging/hello", {"name": "Ty"}) for _ in range(3)]
    sent.append(daemon.request("POST", "/hooks/staging/hello", {}))  # no name: it fails
    for code, body in sent:
        assert code == 202, body
        daemon.finished(body["execution"])
    code, body = daemon.request("GET", "/api/v1/executions/summary", headers=AUTH)
    assert code == 200, body
    (tally,) = body["versions"]
    took = tally.pop("duration_ms")
    assert 0 < took["p50"] <= took["p95"]
    assert tally == {
        "environment": "staging",
        "workflow": "hello",
        "version": 1,
        "executions": 4,
        "statuses": {"succeeded": 3, "failed": 1},
        "failure_rate": 0.25,
        "last_started_at": tally["last_started_at"],
        "errors": [
            {
                "error": "step greet failed: with.text: trigger.body has no key 'name' (it is"
                " empty)",
                "count": 1,
            }
        ],
    }
    assert unix(body["since"]) == pytest.approx(time.time() - 24 * 3600, abs=60)  # by default
    for query, versions in (
        ("environment=production", 0),
        ("workflow=hello&since=1h", 1),
        ("since=2999-01-01", 0),
        (f"since={time.time() + 60}", 0),
        ("workflow=hello&version=1", 1),
        ("workflow=hello&version=v2", 0),
    ):
        code, found = daemon.request("GET", f"/api/v1/executions/summary?{query}", headers=AUTH)
        assert code == 200 and len(found["versions"]) == versions, (query, found)
    for query, rows in (("workflow=hello&version=V1", 4), ("workflow=hello&version=2", 0)):
        code, found = daemon.request("GET", f"/api/v1/executions?{query}", headers=AUTH)
        assert code == 200 and len(found) == rows, (query, found)
    for query, message in (
        ("since=soon", "since takes a Unix time, an age such as 30m"),
        ("environment=", "environment is empty; leave it out, or name one"),
        ("environment=stagign", "unknown environment 'stagign': did you mean staging?"),
        ("version=1", "version goes with workflow: each workflow numbers its own versions"),
        ("workflow=hello&version=1.0", "version is a workflow's version number, as 3 or v3"),
        ("workflow=hello&version=0", "version is a workflow's version number, as 3 or v3"),
    ):
        for path in ("/api/v1/executions/summary", "/api/v1/executions"):
            code, found = daemon.request("GET", f"{path}?{query}", headers=AUTH)
            assert code == 400 and found["error"].startswith(message), (path, query, found)
    assert daemon.request("GET", "/api/v1/executions/summary")[0] == 401
    refused = 'loomgit_api_refused_total{endpoint="summary",reason="missing"}'
    assert _metric(daemon, refused) == "1.0"
    # The CLI reads the same through --server, as a table, as JSON, and as a gate.
    monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)
    table = cli("executions", "summary", "--server", daemon.url)
    assert table.code == 0, table.err
    assert table.out.splitlines()[1].split() == [
        "env", "workflow", "ver", "executions", "succeeded", "failed", "failure", "rate",
        "p50", "took", "p95", "took", "last", "started", "(UTC)",
    ]  # fmt: skip
    assert table.out.splitlines()[2].split()[:7] == [
        "staging", "hello", "v1", "4", "3", "1", "25.0%",
    ]  # fmt: skip
    assert "  hello v1 in staging, once: step greet failed: with.text: trigger.body" in table.out
    as_json = cli("executions", "summary", "--server", daemon.url, "--format", "json")
    assert json.loads(as_json.out)["versions"][0]["statuses"] == tally["statuses"]
    gate = cli("executions", "summary", "--server", daemon.url, "--max-failure-rate", "20%")
    assert gate.code == 1 and gate.err == (
        "error: failed more often than --max-failure-rate 20%: hello v1 in staging"
        " (25.0%: 1 of 4)\n"
    )
    passed = cli("executions", "--server", daemon.url, "summary", "--max-failure-rate", "25")
    assert passed.code == 0, passed.err
    # One version's, through --server too; a version none serves names those served.
    one = ("--workflow", "hello", "--version", "1", "--format", "json")
    assert len(json.loads(cli("executions", "--server", daemon.url, *one).out)) == 4
    judged = cli("executions", "summary", "--server", daemon.url, *one, "--max-failure-rate", "20")
    assert judged.code == 1 and "hello v1 in staging (25.0%: 1 of 4)" in judged.err
    for args in (("executions",), ("executions", "summary")):
        other = cli(*args, "--server", daemon.url, "--workflow", "hello", "--version", "2")
        assert other.code == 0 and other.out == "", other
        assert other.err.splitlines()[-1] == (
            f"hint: the daemon at {daemon.url} serves hello v1 in staging, v1 in production"
        )


def test_without_tokens_the_api_says_how_to_give_them(
    repo: Repo, cli: Cli, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon started without tokens serves its webhooks and its environments, and
    refuses what needs a token with how to give one; the CLI does not then ask for a
    token that no daemon would take."""
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo, env={"LOOMGIT_API_TOKENS": ""})
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Bo"})[0] == 202
    assert daemon.request("GET", "/api/v1/environments")[0] == 200
    for method, path in (("GET", "/api/v1/executions"), ("POST", "/api/v1/reconcile")):
        code, body = daemon.request(method, path, headers=AUTH)
        assert (code, body) == (401, {"error": NO_API_TOKENS}), path
    refused = 'loomgit_api_refused_total{endpoint="reconcile",reason="no_tokens"}'
    assert _metric(daemon, refused) == "1.0"
    monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)
    result = cli("executions", "--server", daemon.url)
    assert result.code == 2 and result.err.splitlines() == [
        f"error: {daemon.url}/api/v1/executions?limit=50 answered 401: {NO_API_TOKENS}",
        "hint: no token is accepted until the daemon is restarted with API tokens",
    ], result.err


def test_api_requests_refused_for_their_token_are_counted(repo: Repo, start: Start) -> None:
    """A client left with a rotated token, or probing without one, shows in /metrics by
    endpoint and reason, as a webhook's refusals do; an accepted request counts nothing."""
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo)
    wrong = {"Authorization": "Bearer not-the-token-0123456789"}
    asked = [
        ("GET", "/api/v1/executions", {}),
        ("GET", "/api/v1/executions", wrong),
        ("GET", "/api/v1/executions", wrong),
        ("GET", "/api/v1/executions/01M82GQ81HK1VD9YB2FCS0DG8D", {}),
        ("POST", "/api/v1/reconcile", {"Authorization": "Basic dTpw"}),
        ("POST", "/api/v1/workflows/hello/executions", wrong),
    ]
    for method, path, headers in asked:
        assert daemon.request(method, path, headers=headers)[0] == 401, path
    assert daemon.request("GET", "/api/v1/executions", headers=AUTH)[0] == 200
    counted = {
        ("executions", "missing"): "1.0",
        ("executions", "wrong"): "2.0",
        ("execution", "missing"): "1.0",
        ("reconcile", "wrong"): "1.0",
        ("run", "wrong"): "1.0",
        ("run", "missing"): None,
    }
    for (endpoint, reason), value in counted.items():
        line = f'loomgit_api_refused_total{{endpoint="{endpoint}",reason="{reason}"}}'
        assert _metric(daemon, line) == value, line
    assert "not-the-token" not in daemon.stop()


def test_a_short_api_token_is_warned_of_and_still_accepted(repo: Repo, start: Start) -> None:
    daemon = start(repo, env={"LOOMGIT_API_TOKENS": f"letmein,{TOKEN}"})
    assert "shorter than" in daemon.log and "short=1 tokens=2" in daemon.log
    assert "letmein" not in daemon.log and TOKEN not in daemon.log
    weak = {"Authorization": "Bearer letmein"}
    assert daemon.request("GET", "/api/v1/executions", headers=weak)[0] == 200
    assert "shorter than" not in start(repo).log  # TOKEN alone


def test_idempotency_key_returns_the_first_execution(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    key = {"Idempotency-Key": "delivery-42"}
    first = daemon.request("POST", "/hooks/staging/hello", {"name": "Gu"}, headers=key)
    again = daemon.request("POST", "/hooks/staging/hello", {"name": "Gu"}, headers=key)
    assert first[0] == 202 and again[0] == 200
    assert again[1]["execution"] == first[1]["execution"]
    # A key is kept with its execution and indexed: one of 60,000 characters was.
    for header in ("Idempotency-Key", "X-GitHub-Delivery"):
        long_key = {header: "k" * (MAX_KEY_LENGTH + 1)}
        code, body = daemon.request("POST", "/hooks/staging/hello", {}, headers=long_key)
        assert (code, body) == (400, {"error": KEY_TOO_LONG})
    longest = {"Idempotency-Key": "k" * MAX_KEY_LENGTH}
    assert daemon.request("POST", "/hooks/staging/hello", {}, headers=longest)[0] == 202
    assert len(daemon.executions()) == 2


def test_a_request_head_past_the_limit_is_refused_before_it_ends(
    repo: Repo, cli: Cli, start: Any
) -> None:
    """uvicorn reads a head however long it is (a header of 150 MiB grew the daemon by as
    much, and one of 3 MB was recorded with its execution): past 64 KiB, 431 and the
    connection closed, while the client is still sending."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    pad = {"X-Pad": "p" * (MAX_HEAD_BYTES - 1000)}
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Ha"}, headers=pad)[0] == 202
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /hooks/staging/hello HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # closed on us once it has answered
            for _ in range(64):  # 64 MiB, far past the limit
                sock.sendall(b"a" * (1 << 20))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and json.loads(body) == {"error": TOO_LARGE}
    assert len(daemon.executions()) == 1
    assert (
        'loomgit_http_refused_total{reason="head_too_large"} 1.0'
        in daemon.request("GET", "/metrics")[1]
    )
    assert daemon.request("GET", "/healthz")[0] == 200


def test_json_bodies_other_readers_could_not_read_are_refused(
    repo: Repo, cli: Cli, start: Any
) -> None:
    """NaN, and nesting past jsontext.MAX_DEPTH (100,000 levels once answered 500 with a
    RecursionError): 400 that says why, nothing recorded, the daemon serving on."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    json_type, hook = {"Content-Type": "application/json"}, "/hooks/staging/hello"
    for raw, message in (
        (b"[" * 100_000 + b"]" * 100_000, "the body is refused: it nests arrays and objects"),
        (b'{"a": ' * 101 + b"1" + b"}" * 101, "the body is refused: it nests arrays and objects"),
        (b'{"name": NaN}', "the body is not valid JSON"),
        (b'{"name": -Infinity}', "the body is not valid JSON"),
    ):
        code, body, _ = daemon.answer("POST", hook, headers=json_type, raw=raw)
        assert code == 400 and body["error"].startswith(message), (raw[:20], body)
    deep_enough = b'{"a": ' * 99 + b'{"name": "Nia"}' + b"}" * 99
    code, body, _ = daemon.answer("POST", hook, headers=json_type, raw=deep_enough)
    assert code == 202
    assert [ex["id"] for ex in daemon.executions()] == [body["execution"]]
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="body"}'
    assert _metric(daemon, refused) == "4.0"
    assert "Traceback" not in daemon.log and "internal error" not in daemon.log


def test_a_compressed_body_is_refused_415(repo: Repo, cli: Cli, start: Any) -> None:
    """Read as it came, a gzip body reached the workflow as garbled text (or was refused
    as JSON that is not): 415 naming the encoding, with Accept-Encoding, nothing recorded;
    on the API trigger too. `identity` is no compression."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    packed = gzip.compress(b'{"name": "Zed"}')
    api = "/api/v1/workflows/hello/executions"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path, given in (("/hooks/staging/hello", {}), (api, bearer)):
        for coding in ("gzip", "br"):
            headers = {**given, "Content-Encoding": coding}
            code, body, answered = daemon.answer("POST", path, headers=headers, raw=packed)
            expected = f"Content-Encoding {coding} is not accepted; send the body uncompressed"
            assert (code, body, answered["Accept-Encoding"]) == (
                415,
                {"error": expected},
                "identity",
            )
    assert daemon.executions() == []
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="encoding"}'
    assert _metric(daemon, refused) == "2.0"
    plain = {"Content-Encoding": "identity"}
    code, body, _ = daemon.answer("POST", "/hooks/staging/hello", {"name": "Zed"}, plain)
    assert code == 202
    assert [ex["id"] for ex in daemon.executions()] == [body["execution"]]


def test_body_limit_and_sigterm(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    big = {"name": "x" * (1024 * 1024 + 10)}
    for _ in range(3):  # urllib says Connection: close and sends the body at once
        assert daemon.request("POST", "/hooks/staging/hello", big)[0] == 413
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="too_large"}'
    assert _metric(daemon, refused) == "3.0"
    api = "/api/v1/workflows/hello/executions"
    assert daemon.request("POST", api, big)[0] == 401  # answered before the body is read
    assert daemon.request("POST", api, big, {"Authorization": f"Bearer {TOKEN}"})[0] == 413
    assert daemon.request("GET", "/healthz")[0] == 200
    host, port = daemon.url.removeprefix("http://").split(":")
    kept = http.client.HTTPConnection(host, int(port), timeout=10)  # keep-alive
    kept.request("POST", "/hooks/staging/hello", json.dumps(big).encode())
    answer = kept.getresponse()
    assert answer.status == 413 and b"larger than 1,048,576 bytes" in answer.read()

    def status() -> int:
        answer = kept.getresponse()
        answer.read()
        return answer.status

    kept.request("GET", "/healthz")  # the same connection goes on
    assert status() == 200
    within = json.dumps({"name": "y" * 300_000}).encode()  # handed over in several parts
    kept.request("POST", "/hooks/staging/hello", within, {"Content-Type": "application/json"})
    assert status() == 202
    kept.putrequest("POST", "/hooks/staging/hello")  # chunked: no length given
    kept.putheader("Transfer-Encoding", "chunked")
    kept.putheader("Content-Type", "application/json")
    kept.endheaders()
    kept.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(within), within))
    assert status() == 202
    kept.close()
    waiting = http.client.HTTPConnection(host, int(port), timeout=10)
    waiting.putrequest("POST", "/hooks/staging/hello")
    waiting.putheader("Content-Length", str(2 * 1024 * 1024))
    waiting.putheader("Expect", "100-continue")
    waiting.endheaders()  # no body sent: the 413 comes without it
    assert waiting.getresponse().status == 413
    waiting.close()
    assert "Traceback" not in daemon.log
    err = daemon.stop()
    assert daemon.proc.returncode == 0, err
    assert "Traceback" not in err


def test_serve_refuses_bad_arguments(repo: Repo, cli: Cli) -> None:
    result = cli("serve", "--environments", "staging,qa", "--repo", repo.path)
    assert result.code == 2 and "unknown environment 'qa'" in result.err
    result = cli("serve", "--environments", "prod", "--repo", repo.path)
    assert result.code == 2 and "hint: did you mean production?" in result.err
    result = cli("serve", "--environments", " , ", "--repo", repo.path)
    assert (result.code, result.err.splitlines()[0]) == (
        2,
        "error: --environments ',' names no environment",
    )
    result = cli("serve", "--interval", "often", "--repo", repo.path)
    assert result.code == 2 and "--interval: 'often' is not a duration" in result.err
    for value in ("0s", "25h"):
        result = cli("serve", "--interval", value, "--repo", repo.path)
        expected = f"error: --interval {value}: give a duration above 0 and at most 24h\n"
        assert (result.code, result.err) == (2, expected)
    result = cli("serve", "--interval", "100ms", "--repo", repo.path)  # a fetch storm
    assert (result.code, result.err.splitlines()) == (
        2,
        [
            "error: --interval 100ms: give at least 1s; each cycle reads git (with --remote,"
            " fetches)",
            "hint: for changes to apply at once, send the git host's push webhook to"
            " POST /api/v1/git-webhook",
        ],
    )
    # Retention that would keep nothing is refused, and every option is checked before
    # a remote is fetched (fetched first, this closed port's error would come instead).
    remote = ("--remote", "https://127.0.0.1:9/flows.git", "--branch", "main")
    result = cli("serve", "--prune-older-than", "0d", *remote, "--repo", repo.path)
    expected = "error: --prune-older-than 0d would delete each execution as soon as it ends\n"
    assert (result.code, result.err.splitlines()[0] + "\n") == (2, expected), result.err
    empty = repo.path.parent / "tokens"
    empty.write_text("# none yet\n\n")
    result = cli("serve", "--api-token-file", empty, *remote, "--repo", repo.path)
    assert (result.code, result.err) == (2, f"error: the token file {empty} holds no tokens\n")
    binary = repo.path.parent / "binary"
    binary.write_bytes(b"\xff\xfe\x00\xc3\x28")
    for option, what in (
        ("--api-token-file", "the token file"),
        ("--git-webhook-secret-file", "the git webhook secret file"),
    ):
        result = cli("serve", option, binary, *remote, "--repo", repo.path)
        assert (result.code, result.err) == (2, f"error: {what} {binary} is not UTF-8 text\n")
    # An age key file without an identity: before, staging was served as DecryptionFailed.
    public = repo.path.parent / "public.agekey"
    public.write_text("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n")
    public.chmod(0o600)
    result = cli("serve", "--age-key-file", f"staging={public}", "--repo", repo.path)
    expected = f"error: the age key file for staging ({public}): line 1 is a public key"
    assert (result.code, result.err.splitlines()[0][: len(expected)]) == (2, expected)


def test_a_port_in_use_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*LOOMGIT, "serve", "--repo", str(repo.path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LOOMGIT_STATE_DIR": str(tmp_path / "state")},
        )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "hint: pass another --port, or stop what is using it" in proc.stderr
    assert "Traceback" not in proc.stderr
    # 192.0.2.1 is kept for documentation: no machine has it, and binding sends nothing.
    proc = subprocess.run(
        [*LOOMGIT, "serve", "--repo", str(repo.path), "--host", "192.0.2.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LOOMGIT_STATE_DIR": str(tmp_path / "state")},
    )
    assert proc.returncode == 2 and "cannot listen on 192.0.2.1:0" in proc.stderr
    assert "hint: --host is not an address of this machine" in proc.stderr


def test_why_the_daemon_cannot_listen_gives_its_own_hint() -> None:
    import errno
    import socket

    from loomgit.server import _listen_hint

    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert _listen_hint(unknown).startswith("--host takes an address or a name")
    assert _listen_hint(PermissionError(errno.EACCES, "denied")).startswith("ports below 1024")


SECRET = "LOOMGIT-CANARY-greeter"  # greeter.token in the fixture's credentials


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_a_signed_webhook_refuses_a_wrong_signature(repo: Repo, start: Start) -> None:
    signed = HELLO.replace(
        "      path: hello\n",
        "      path: hello\n      signature: {credential: greeter, field: token}\n",
    )
    put_everywhere(repo, signed, {"staging": True})
    daemon = start(repo)
    raw = json.dumps({"name": "Sig"}).encode()
    path = "/hooks/staging/hello"
    assert daemon.request("POST", path, raw=raw)[0] == 401
    bad = {"X-Hub-Signature-256": sign("wrong", raw)}
    assert daemon.request("POST", path, raw=raw, headers=bad)[0] == 401
    good = {"X-Hub-Signature-256": sign(SECRET, raw)}
    code, body = daemon.request("POST", path, raw=raw, headers=good)
    assert code == 202, body
    assert daemon.finished(body["execution"])["status"] == "succeeded"
    assert len(daemon.executions()) == 1  # the refused ones were not recorded
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="signature"}'
    assert _metric(daemon, refused) == "2.0"
    assert SECRET not in daemon.stop()


def test_a_webhook_signed_in_base64_as_shopify_signs(repo: Repo, start: Start) -> None:
    shopify = HELLO.replace(
        "      path: hello\n",
        "      path: hello\n      signature: {credential: greeter, field: token,"
        " header: X-Shopify-Hmac-Sha256, encoding: base64}\n",
    )
    put_everywhere(repo, shopify, {"staging": True})
    daemon = start(repo)
    raw = json.dumps({"name": "Shop"}).encode()
    digest = hmac.new(SECRET.encode(), raw, hashlib.sha256).digest()
    path = "/hooks/staging/hello"
    hexed = {"X-Shopify-Hmac-Sha256": digest.hex()}
    assert daemon.request("POST", path, raw=raw, headers=hexed)[0] == 401
    good = {"X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode()}
    code, body = daemon.request("POST", path, raw=raw, headers=good)
    assert code == 202, body
    assert len(daemon.executions()) == 1


AUTHED = HELLO.replace(
    "      path: hello\n",
    "      path: hello\n      auth: {credential: greeter}\n"
    "    - type: webhook\n      path: keyed\n"
    "      auth: {credential: greeter, field: token, header: X-Api-Key}\n",
)


def _wants_auth(
    daemon: Daemon, path: str, error: str, challenge: str | None, header: str, wrong: list[str]
) -> None:
    """Without the header: 401 with `error` and the `challenge` (WWW-Authenticate); with
    each `wrong` value of `header`: 401 too."""
    code, body, headers = daemon.answer("POST", path, {"name": "Al"})
    assert (code, body) == (401, {"error": error})
    assert headers.get("WWW-Authenticate") == challenge
    for value in wrong:
        assert daemon.request("POST", path, {"name": "Al"}, {header: value})[0] == 401, value


def _accepted(daemon: Daemon, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """A request the webhook takes: its execution, which succeeded."""
    code, body = daemon.request("POST", path, {"name": "Al"}, headers)
    assert code == 202, body
    done: dict[str, Any] = daemon.finished(body["execution"])
    assert done["status"] == "succeeded"
    return done


def test_a_webhook_with_auth_wants_the_secret_in_its_header(repo: Repo, start: Start) -> None:
    """`Authorization: Bearer <secret>` by default, as Alertmanager and Grafana send it;
    another header carries the secret alone. Refused before the body, nothing recorded."""
    put_everywhere(repo, AUTHED, {"staging": True})
    daemon = start(repo)
    path = "/hooks/staging/hello"
    wrong = ["Bearer wrong-token", f"Basic {SECRET}", SECRET, f"Bearer {SECRET}x", "Bearer"]
    error = "missing or wrong bearer token in the Authorization header"
    challenge = 'Bearer realm="loomgit staging"'
    _wants_auth(daemon, path, error, challenge, "Authorization", wrong)
    done = _accepted(daemon, path, {"Authorization": f"bearer  {SECRET}"})
    assert done["trigger"]["headers"]["authorization"] == "[redacted]"
    keyed = "/hooks/staging/keyed"
    error = "missing or wrong X-Api-Key header"
    # Only Authorization takes a scheme.
    _wants_auth(daemon, keyed, error, None, "X-Api-Key", ["nope", f"Bearer {SECRET}"])
    _accepted(daemon, keyed, {"X-Api-Key": SECRET})
    assert len(daemon.executions()) == 2  # the refused ones were not recorded
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="auth"}'
    assert _metric(daemon, refused) == "9.0"
    assert SECRET not in json.dumps(daemon.executions()) + daemon.stop()


def test_a_webhook_whose_auth_secret_is_missing_is_not_served(repo: Repo, start: Start) -> None:
    """Without its secret a webhook would be open to anyone: a version whose credential
    lacks the field is not served (LG701), and the one before it goes on."""
    put_everywhere(repo, AUTHED, {"staging": True})
    daemon = start(repo)
    ok = {"Authorization": f"Bearer {SECRET}"}
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "A"}, ok)[0] == 202
    missing = AUTHED.replace("field: token, header: X-Api-Key", "field: nope, header: X-Api-Key")
    put_everywhere(repo, missing, {"staging": True})
    condition = daemon.reconcile()["staging"]["conditions"][0]
    assert condition["reason"] == "ValidationFailed", condition
    assert (
        "hello.yaml:12:35: error[LG701]: credential 'greeter' has no field 'nope'"
        in (condition["message"])
    )
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "B"}, ok)[0] == 202
    keyed = {"X-Api-Key": SECRET}
    assert daemon.request("POST", "/hooks/staging/keyed", {"name": "C"}, keyed)[0] == 202
    assert daemon.request("POST", "/hooks/staging/keyed", {"name": "D"}, ok)[0] == 401


BASIC = HELLO.replace(
    "      path: hello\n", "      path: hello\n      auth: {credential: greeter, scheme: basic}\n"
)
PASSWORD = "LOOMGIT-CANARY-pässwort"  # not ASCII: RFC 7617's UTF-8


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def test_a_webhook_with_basic_auth_wants_the_user_and_password(
    repo: Repo, start: Start, age_key: AgeKey
) -> None:
    """`scheme: basic`: `Authorization: Basic <base64 of user:password>`, as Alertmanager's
    basic_auth, Grafana's webhook and `curl -u` send it; the credential's `user` and
    `password` by default."""
    fields = {"token": SECRET, "user": "alertmanager", "password": PASSWORD}
    encrypted = sops.encrypt({"greeter": fields}, [age_key.recipient], what="credentials")
    repo.write("credentials.sops.yaml", encrypted)
    put_everywhere(repo, BASIC, {"staging": True})
    daemon = start(repo)
    path = "/hooks/staging/hello"
    right = basic(f"alertmanager:{PASSWORD}")
    wrong = [
        basic(f"alertmanager:{PASSWORD}x"),
        basic(f"someone:{PASSWORD}"),
        basic(f"alertmanager:{PASSWORD}".encode().decode("latin-1")),  # not UTF-8
        basic(PASSWORD),
        basic("alertmanager:"),
        f"Bearer {SECRET}",
        right[:-2],  # its padding cut: not base64
        "Basic !!" + right[8:],
        "Basic",
    ]
    error = "missing or wrong basic credentials in the Authorization header"
    challenge = 'Basic realm="loomgit staging", charset="UTF-8"'
    _wants_auth(daemon, path, error, challenge, "Authorization", wrong)
    done = _accepted(daemon, path, {"Authorization": f"basic  {right[6:]}"})
    assert done["trigger"]["headers"]["authorization"] == "[redacted]"
    assert len(daemon.executions()) == 1
    refused = 'loomgit_webhook_refused_total{environment="staging",reason="auth"}'
    assert _metric(daemon, refused) == "10.0"
    assert PASSWORD not in json.dumps(daemon.executions()) + daemon.stop()


def test_authorized_compares_the_whole_secret() -> None:
    assert authorized(b"s3cret-value", "Bearer s3cret-value", "bearer")
    assert authorized(b"s3cret-value", "BEARER s3cret-value ", "bearer")
    assert not authorized(b"s3cret-value", "Bearer s3cret", "bearer")
    assert not authorized(b"", "Bearer ", "bearer")  # an empty secret lets nobody in
    assert not authorized(b"", "", None)
    assert authorized("sécret".encode(), "sécret".encode().decode("latin-1"), None)
    assert authorized(b"u:p", "Basic dTpw", "basic")
    assert not authorized(b"u:p", "Basic dTp", "basic")  # cut short: not base64
    assert not authorized(b"u:p", "Basic dTpw=", "basic")  # padding past what is due
    assert not authorized(b"u:p", "Basic dTpw==", "basic")
    assert authorized(b"u:", "Basic dTo=", "basic")
    assert not authorized(b"u:", "Basic dTp=", "basic")  # the same bytes, stray low bits
    assert not authorized(b"u:p", "Basic u:p", "basic")
    assert not authorized(b"u:p", "Bearer dTpw", "basic")


def test_an_empty_signature_secret_signs_nothing() -> None:
    """A credential whose field is empty (or missing) would let anyone sign: never a match."""
    raw = b'{"name": "Sig"}'
    assert signed(b"s3cret-value", raw, sign("s3cret-value", raw))
    assert not signed(b"", raw, sign("", raw))


def test_respond_sync_answers_with_the_respond_step(repo: Repo, start: Start) -> None:
    sync = HELLO.replace("      path: hello\n", "      path: hello\n      respond: sync\n")
    sync += (
        "    - id: answer\n      type: respond\n"
        "      with:\n        status: 201\n"
        "        headers: {X-Greeting: '{{ trigger.body.name }}'}\n"
        "        body: {greeting: '{{ steps.greet.output.text }}'}\n"
    )
    put_everywhere(repo, sync, {"staging": True})
    daemon = start(repo)
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Syd"})
    assert (code, body) == (201, {"greeting": "Hello, Syd"})
    # A caller's line break in a header value is dropped, not sent nor crashing the answer.
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Syd\r\nSet-Cookie: x"})
    assert code == 201 and body["greeting"].startswith("Hello, Syd")
    assert "Traceback" not in daemon.log and "Error handling request" not in daemon.log


USERS = """\
apiVersion: loomgit/v1
kind: Workflow
metadata:
  name: users
spec:
  triggers:
    - {type: webhook, path: users/me, method: GET, respond: sync}
    - {type: webhook, path: "users/:id", method: GET, respond: sync}
    - {type: webhook, path: ":kind/42", method: GET, respond: sync}
    - {type: webhook, path: "/users/:id/orders/:order", respond: sync}
  steps:
    - id: answer
      type: respond
      with: {body: "{{ trigger.params }}"}
"""


def test_webhook_paths_take_parameters(repo: Repo, start: Start) -> None:
    """A `:name` segment takes any one segment, as `trigger.params.name`, percent-decoded;
    a literal segment wins over a parameter, from the left."""
    for env in ("development", "staging", "production"):
        (repo.path / repo.wf(env)).unlink()  # hello, whose records put_everywhere replaces
    put_everywhere(repo, USERS, {"staging": True}, name="users")
    daemon = start(repo)
    assert "/hooks/staging/users/:id  -> users" in daemon.log
    for path, params in [
        ("users/me", {}),
        ("users/42", {"id": "42"}),
        ("orders/42", {"kind": "orders"}),
        ("users/a%2Fb%20c", {"id": "a/b c"}),
        ("users/caf%C3%A9/", {"id": "café"}),
    ]:
        assert daemon.request("GET", f"/hooks/staging/{path}") == (200, params), path
    code, params = daemon.request("POST", "/hooks/staging/users/7/orders/9", {})
    assert (code, params) == (200, {"id": "7", "order": "9"})
    (ex,) = daemon.executions(workflow="users", limit="1")
    assert daemon.finished(ex["id"])["trigger"]["params"] == {"id": "7", "order": "9"}
    code, body, headers = daemon.answer("PUT", "/hooks/staging/users/7")
    assert (code, headers["Allow"]) == (405, "GET"), body
    assert body == {"error": "/users/7 in staging accepts GET, not PUT"}
    for method, path in [("GET", "users/7/orders"), ("GET", "users//7"), ("POST", "users/7/x")]:
        code, body = daemon.request(method, f"/hooks/staging/{path}")
        assert code == 404 and body["error"].startswith("no active webhook"), path
    assert daemon.request("GET", "/hooks/production/users/42")[0] == 404  # inactive there


def _active_in_staging(repo: Repo, workflows: dict[str, str]) -> None:
    """Commits `workflows` (name: definition) into staging, promoted as v1 and active,
    beside hello (inactive)."""
    entries = {"hello": promoted(HELLO, 1, "development", repo.source_commit)}
    for name, text in workflows.items():
        repo.write(repo.wf("staging", name), text)
        entries[name] = promoted(text, 1, "development", repo.source_commit, True)
    repo.write("environments/staging/environment.yaml", state_yaml("staging", entries))
    commit_all(repo.path, f"{', '.join(workflows)} active in staging")


def _sync_hook(name: str, first_step_url: str, *, trigger: str = "", spec: str = "") -> str:
    """HELLO as `name`, a `respond: sync` webhook at /name whose first step calls the URL;
    `trigger` and `spec` each add one line to the trigger or the spec."""
    call = f"    - id: call\n      type: http\n      with: {{url: '{first_step_url}'}}\n"
    sync = f"      path: {name}\n      respond: sync\n" + (f"      {trigger}\n" if trigger else "")
    text = HELLO.replace("name: hello", f"name: {name}").replace("      path: hello\n", sync)
    return text.replace("  steps:\n", (f"  {spec}\n" if spec else "") + "  steps:\n" + call)


def test_respond_sync_past_its_timeout_or_failing_answers_with_the_execution(
    repo: Repo, start: Start
) -> None:
    """Past respond_timeout the caller gets 202 with the id and the execution goes on; one
    that fails answers 500, one that times out 504, each with its id and error."""
    for server in serve():
        hooks = {
            "slow": _sync_hook("slow", f"{server.url}/slow/3", trigger="respond_timeout: 300ms"),
            "failing": _sync_hook("failing", f"{server.url}/status/500"),
            "late": _sync_hook("late", f"{server.url}/slow/3", spec="timeout: 300ms"),
        }
        _active_in_staging(repo, hooks)
        daemon = start(repo)
        began = time.monotonic()
        code, body = daemon.request("POST", "/hooks/staging/slow", {"name": "Ola"})
        assert code == 202 and time.monotonic() - began < 2.5, daemon.log
        ident = body["execution"]
        code, ex = daemon.request("GET", f"/api/v1/executions/{ident}", headers=AUTH)
        assert ex["status"] in ("queued", "running")  # answered while the slow step runs
        code, body = daemon.request("POST", "/hooks/staging/failing", {"name": "Ola"})
        assert code == 500 and body["status"] == "failed" and "500" in body["error"], body
        assert daemon.finished(body["execution"])["status"] == "failed"
        code, body = daemon.request("POST", "/hooks/staging/late", {"name": "Ola"})
        assert code == 504 and body["status"] == "timed_out", body
        assert daemon.finished(ident)["status"] == "succeeded"  # the 202 one went on


def test_a_repeated_key_answers_a_sync_webhook_as_the_first_time(repo: Repo, start: Start) -> None:
    """A caller retrying a `respond: sync` webhook with its Idempotency-Key (its
    connection dropped, say) gets the first execution's answer once it has ended, marked
    `Idempotent-Replayed: true`, and nothing runs twice; past respond_timeout, the id."""
    answer = (
        "    - id: answer\n      type: respond\n      with:\n        status: 201\n"
        "        headers: {X-Name: '{{ trigger.body.name }}'}\n"
        "        body: {greeting: '{{ steps.greet.output.text }}'}\n"
    )
    for server in serve():
        hooks = {
            "greeting": _sync_hook("greeting", f"{server.url}/slow/1") + answer,
            "slow": _sync_hook("slow", f"{server.url}/slow/3", trigger="respond_timeout: 300ms"),
        }
        _active_in_staging(repo, hooks)
        daemon = start(repo)
        key = {"Idempotency-Key": "retry-7"}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                daemon.answer, "POST", "/hooks/staging/greeting", {"name": "Ana"}, key
            )
            time.sleep(0.3)  # sent while the first one runs: it waits for it
            again = pool.submit(
                daemon.answer, "POST", "/hooks/staging/greeting", {"name": "Bo"}, key
            )
            answers = [first.result(), again.result()]
        answers.append(daemon.answer("POST", "/hooks/staging/greeting", {"name": "Cy"}, key))
        for i, (code, body, headers) in enumerate(answers):
            assert (code, body) == (201, {"greeting": "Hello, Ana"}), (i, code, body)
            assert headers["X-Name"] == "Ana"
            assert headers.get("Idempotent-Replayed") == (None if i == 0 else "true")
        assert len(daemon.executions(workflow="greeting")) == 1
        slow = {"Idempotency-Key": "slow-1"}
        code, body = daemon.request("POST", "/hooks/staging/slow", {"name": "Di"}, headers=slow)
        assert code == 202, body
        began = time.monotonic()
        assert daemon.request("POST", "/hooks/staging/slow", {}, headers=slow) == (200, body)
        assert 0.25 < time.monotonic() - began < 2.5  # it waited respond_timeout, no more


def slow_hello(url: str) -> str:
    wait = f"    - id: wait\n      type: http\n      with: {{url: '{url}/slow/30'}}\n"
    return HELLO.replace("  steps:\n", "  steps:\n" + wait)


def test_sigkill_and_restart_loses_no_accepted_execution(
    repo: Repo, start: Start, tmp_path: Path
) -> None:
    for server in serve():
        put_everywhere(repo, slow_hello(server.url), {"staging": True})
        state = tmp_path / "state"
        daemon = start(repo, state=state)
        code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Kim"})
        assert code == 202
        children = descendants(daemon.proc.pid)
        assert len(children) == 2  # a runner and the history's writer
        daemon.stop(signal.SIGKILL)
        _wait_gone(children)  # they notice their daemon is gone and stop
        again = start(repo, state=state)
        ex = again.finished(body["execution"])  # recorded before 202, found after the kill
        assert ex["status"] == "interrupted" and "stopped before it finished" in ex["error"]
        assert len(again.executions()) == 1


def test_executions_follow_shows_each_execution_as_it_starts_and_ends(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    for server in serve():
        wait = f"    - id: wait\n      type: http\n      with: {{url: '{server.url}/slow/3'}}\n"
        slow = HELLO.replace("  steps:\n", "  steps:\n" + wait)
        put_everywhere(repo, slow, {"staging": True, "production": True})
        state = tmp_path / "state"
        daemon = start(repo, state=state)
        _, old = daemon.request("POST", "/hooks/staging/hello", {"name": "Old"})
        daemon.finished(old["execution"])
        environ = {**os.environ, "LOOMGIT_API_TOKEN": TOKEN}
        follow = ["executions", "--follow", "--env", "staging", "--format", "json"]
        piped = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        remote = subprocess.Popen([*LOOMGIT, *follow, "--server", daemon.url], env=environ, **piped)
        local = subprocess.Popen([*LOOMGIT, "executions", "-f", "--state-dir", str(state)], **piped)
        try:
            assert remote.stdout is not None and local.stdout is not None
            first = json.loads(remote.stdout.readline())  # the last ones recorded, first
            assert (first["id"], first["status"]) == (old["execution"], "succeeded")
            assert local.stdout.readline().split()[:3] == ["started", "(UTC)", "id"]
            assert old["execution"] in local.stdout.readline()
            _, new = daemon.request("POST", "/hooks/staging/hello", {"name": "New"})
            _, other = daemon.request("POST", "/hooks/production/hello", {"name": "Pro"})
            daemon.finished(new["execution"])
            daemon.finished(other["execution"])
            time.sleep(2.5)  # a read or two after both ended
            daemon.stop()
            time.sleep(2.5)
            assert remote.poll() is None and local.poll() is None  # a daemon gone: it waits
        finally:
            for proc in (remote, local):
                proc.send_signal(signal.SIGINT)
        out, err = remote.communicate(timeout=10)
        assert remote.returncode == 0, err
        # The new execution as it started (its step takes 3 s), then as it ended; the
        # production one is not followed.
        seen = [(row["id"], row["status"]) for row in map(json.loads, out.splitlines())]
        assert seen == [(new["execution"], "running"), (new["execution"], "succeeded")]
        assert err.startswith(f"warning: cannot reach the daemon at {daemon.url}: ")
        assert "reading again every 1 s" in err and "Traceback" not in err
        out, err = local.communicate(timeout=10)
        assert local.returncode == 0 and err == ""
        shown = [(c[2], c[3], c[8]) for c in map(str.split, out.splitlines())]
        both = [(new["execution"], "staging"), (other["execution"], "production")]
        assert sorted(shown[:2]) == sorted((*one, "running") for one in both), out
        assert sorted(shown[2:]) == sorted((*one, "succeeded") for one in both), out
    result = cli("executions", "--follow", "--before", "01JD3N5Q8W")
    assert result.code == 2 and "--follow lists what comes" in result.err
    result = cli("executions", "--follow", "summary")
    assert result.code == 2 and "`executions summary` has no --follow" in result.err
    result = cli("executions", "--follow", "--state-dir", str(tmp_path / "none"))
    assert result.code == 2 and "no execution history at " in result.err


def _failed(history: History, env: str, workflow: str, **fields: Any) -> str:
    """A failed execution recorded straight into the history, as an earlier daemon would
    have left it."""
    started = time.time() - 60
    ex = Execution(
        id=new_id(started),
        environment=env,
        workflow=workflow,
        trigger_type=fields.pop("trigger_type", "webhook"),
        status=fields.pop("status", "failed"),
        started_at=started,
        ended_at=started + 1,
        version=1,
        **fields,
    )
    history.start(ex)
    history.finish(ex)
    return ex.id


def test_an_execution_that_failed_is_retried_once_with_its_trigger(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /api/v1/executions/{id}/retry` and `loomgit executions retry`: a webhook
    execution that failed (its backend answered 503 once) runs again with its body, as
    production serves the workflow now, without the redacted Authorization header; asked
    again, the first retry is named; what cannot be retried is refused with why. From the
    step that failed, the step before it (an order created) is not run again."""
    for server in serve():
        call = "    - id: create\n      type: http\n      with:\n"
        call += f"        url: '{server.url}/create/{{{{ trigger.body.name }}}}'\n"
        call += "        method: POST\n"
        call += "    - id: call\n      type: http\n      with:\n"
        call += f"        url: '{server.url}/flaky/{{{{ trigger.body.name }}}}/1'\n"
        flaky = HELLO.replace("  steps:\n", "  steps:\n" + call)
        put_everywhere(repo, flaky, {"production": True})
        state = tmp_path / "state"
        daemon = start(repo, state=state)
        sent = {"Authorization": "Bearer the-sender-secret", "X-Request-Id": "r-1"}
        _, first = daemon.request("POST", "/hooks/production/hello", {"name": "Ann"}, headers=sent)
        failed = daemon.finished(first["execution"])
        assert failed["status"] == "failed" and "503" in failed["error"]
        monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)
        window = ("executions", "retry", "--since", "1h", "--env", "production")
        result = cli(*window, "--dry-run", "--server", daemon.url)
        assert result.code == 0, result.err
        assert result.out == f"would retry {failed['id']} (hello v1 in production, failed)\n"
        assert len(daemon.executions(environment="production")) == 1  # a dry run runs none
        result = cli(*window, "--server", daemon.url)
        assert result.code == 0, result.err
        (line, hint) = result.out.splitlines()
        retried = line.split()[3]
        assert line == f"retried {failed['id']} as {retried} (hello v1 in production)"
        assert (
            hint
            == f"hint: follow them: loomgit executions -f --server {daemon.url} --env production"
        )
        again = daemon.finished(retried)
        assert again["status"] == "succeeded", again
        trigger = again["trigger"]
        assert trigger["retry_of"] == failed["id"] and trigger["body"] == {"name": "Ann"}
        assert trigger["headers"]["x-request-id"] == "r-1"
        assert "authorization" not in trigger["headers"]  # recorded [redacted]: left out
        assert server.hits["/flaky/Ann/1"] == 2
        assert server.hits["/create/Ann"] == 2  # every step again: created twice
        # Asked again, by the window or by id: the first retry, nothing run.
        result = cli(*window, "--format", "json", "--server", daemon.url)
        assert result.code == 0, result.err
        assert [(r["execution"], r["result"], r["retry"]) for r in json.loads(result.out)] == [
            (failed["id"], "already_retried", retried)
        ]
        result = cli("executions", "retry", failed["id"][:10], "--server", daemon.url)
        assert (result.code, result.out) == (
            0,
            f"already retried {failed['id']} as {retried} (hello v1 in production)\n",
        )
        assert server.hits["/flaky/Ann/1"] == 2
        result = cli("executions", "--env", "production", "--server", daemon.url)
        assert "webhook ↻" in result.out.splitlines()[1] and retried in result.out
        result = cli("executions", "show", retried, "--server", daemon.url)
        assert f"trigger:     webhook (a retry of {failed['id']})" in result.out
        # What cannot be retried: each says why (409), the others are still retried.
        with History(state / "history.db") as history:
            manual = _failed(history, "production", "hello", trigger_type="manual")
            masked = _failed(history, "production", "hello", trigger={"body": {"t": "[redacted]"}})
            asleep = _failed(history, "staging", "hello")  # hello is not active there
            gone = _failed(history, "production", "gone")
            before = _failed(history, "staging", "hello")  # and its retry, made earlier
            made = _failed(history, "staging", "hello", dedupe_key=f"retry:{before}")
        cases = {
            retried: "it succeeded; only an execution that did not is retried",
            manual: "it was a manual run; run it again with `loomgit run hello` (its input "
            f"is in `loomgit executions show {manual}`)",
            masked: "its trigger.body.t was recorded redacted (it held a credential's value), "
            "so it cannot be sent again as it came; have its sender send it again",
            asleep: f"hello is not active in staging; activate it to retry {asleep}",
            gone: "gone is no longer in production; nothing to retry it with",
        }
        for ident, why in cases.items():
            code, body = daemon.request("POST", f"/api/v1/executions/{ident}/retry", headers=AUTH)
            assert (code, body) == (409, {"error": why})
        result = cli("executions", "retry", *cases, "--server", daemon.url)
        assert result.code == 1 and result.out == "5 not retried\n"
        assert result.err.splitlines() == [f"not retried {i}: {why}" for i, why in cases.items()]
        # Retried before, while hello was active in staging: that retry, active or not now.
        code, body = daemon.request("POST", f"/api/v1/executions/{before}/retry", headers=AUTH)
        assert (code, body) == (
            200,
            {
                "execution": made,
                "environment": "staging",
                "workflow": "hello",
                "version": 1,
                "retry_of": before,
                "replayed": True,
                "resumed_from": None,
            },
        )
        code, body = daemon.request("POST", f"/api/v1/executions/{'0' * 26}/retry", headers=AUTH)
        assert (code, body) == (404, {"error": f"no execution {'0' * 26}"})
        result = cli("executions", "retry", retried, "0" * 26, "--dry-run", "--server", daemon.url)
        assert result.code == 1 and result.out.splitlines() == [
            f"would not retry {retried}: {cases[retried]}",
            f"would not retry {'0' * 26}: no execution {'0' * 26}",
            "2 would not be retried",
        ]
        code, _ = daemon.request("POST", f"/api/v1/executions/{failed['id']}/retry")
        assert code == 401
        assert len(daemon.executions(environment="production")) == 5  # none ran
        # From the step that failed: the order created before it is not created again.
        _, bo = daemon.request("POST", "/hooks/production/hello", {"name": "Bo"})
        bo_id = daemon.finished(bo["execution"])["id"]
        plan = f"/api/v1/executions/{bo_id}/retry"
        code, body = daemon.request("GET", plan + "?from=failed_step", headers=AUTH)
        assert (code, body["execution"], body["resumed_from"]) == (200, None, "call")
        result = cli(
            "executions", "retry", bo_id, "--from-failed-step", "--dry-run", "--server", daemon.url
        )
        assert (result.code, result.out) == (
            0,
            f"would retry {bo_id} from step call (hello v1 in production)\n",
        )
        result = cli("executions", "retry", bo_id, "--from-failed-step", "--server", daemon.url)
        assert result.code == 0, result.err
        bo_retry = result.out.split()[3]
        assert result.out.splitlines()[0] == (
            f"retried {bo_id} as {bo_retry} from step call (hello v1 in production)"
        )
        resumed = daemon.finished(bo_retry)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["trigger"]["resumed_from"] == "call"
        steps = [(s["id"], s["status"], s["attempts"]) for s in resumed["steps"]]
        assert steps == [
            ("create", "succeeded", 0),
            ("call", "succeeded", 1),
            ("greet", "succeeded", 1),
            ("say", "succeeded", 1),
        ]
        assert (server.hits["/create/Bo"], server.hits["/flaky/Bo/1"]) == (1, 2)
        shown = cli("executions", "show", bo_retry, "--server", daemon.url).out
        assert f"trigger:     webhook (a retry of {bo_id}, from step call)" in shown
        assert f"[info] not run again: taken as {bo_id} recorded it" in shown
        code, body = daemon.request("POST", plan, {"from": "failed_step"}, headers=AUTH)
        assert (code, body["execution"], body["replayed"], body["resumed_from"]) == (
            200,
            bo_retry,
            True,
            "call",
        )
        code, body = daemon.request("POST", plan, {"from": "middle"}, headers=AUTH)
        assert (code, body) == (
            400,
            {"error": 'a retry starts from "start" (the default) or "failed_step"'},
        )
        # A step before the one that failed whose output held a credential: refused.
        with History(state / "history.db") as history:
            secret = StepRecord(0, "create", "http", "succeeded", output={"k": "[redacted]"})
            held = _failed(history, "production", "hello", steps=(secret,), stopped_at="call")
        result = cli("executions", "retry", held, "--from-failed-step", "--server", daemon.url)
        assert result.code == 1 and result.err == (
            f"not retried {held}: step create's output was recorded redacted (it held a "
            "credential's value), so the retry cannot start at step call; retry it from the "
            "start\n"
        )
    for args, error in (
        (("--since", "1h"), "retry runs in the daemon that recorded the executions: give --server"),
        (("x", "--since", "1h", "--server", "u"), "give the ids to retry, or --since and its"),
        (("--env", "production", "--server", "u"), "--env goes with --since: the window"),
        (("--server", "u"), "give the ids to retry, or --since to retry each execution"),
    ):
        result = cli("executions", "retry", *args)
        assert result.code == 2 and result.err.startswith(f"error: {error}"), result.err


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {pids} did not stop")


def _runner_pids(daemon: Daemon) -> list[int]:
    out = []
    for pid in descendants(daemon.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"loomgit.dispatch" in cmdline:  # a runner (the writer is loomgit.writer)
            out.append(pid)
    return out


def _running(daemon: Daemon) -> str:
    """Triggers the slow hello; returns its id once a runner runs it."""
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Kai"})
    assert code == 202
    for _ in range(100):
        code, ex = daemon.request("GET", f"/api/v1/executions/{body['execution']}", headers=AUTH)
        if ex["status"] == "running":  # recorded queued, then running by a runner
            return str(body["execution"])
        time.sleep(0.05)
    raise AssertionError(f"{body['execution']} did not start running")


def test_a_killed_runner_is_replaced_and_what_it_ran_is_interrupted(
    repo: Repo, start: Start
) -> None:
    for server in serve():
        put_everywhere(repo, slow_hello(server.url), {"staging": True})
        daemon = start(repo, "--grace", "0.2s")
        first = _running(daemon)
        (runner,) = _runner_pids(daemon)
        os.kill(runner, signal.SIGKILL)
        ex = daemon.finished(first)
        assert ex["status"] == "interrupted" and "runner process stopped" in ex["error"]
        _running(daemon)  # a new runner took its place
        (replacement,) = _runner_pids(daemon)
        assert replacement != runner
        # runners take the CPU only when the daemon and the writer leave it idle
        assert os.sched_getscheduler(replacement) == os.SCHED_IDLE
        log = daemon.stop()
        assert daemon.proc.returncode == 0
        assert "runner stopped" in log and "Traceback" not in log


def test_a_runner_killed_while_idle_is_logged_and_replaced(repo: Repo, start: Start) -> None:
    """The kernel's OOM killer, say, with nothing running: a warning, and a new runner."""
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo)
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Ida"})
    assert code == 202 and daemon.finished(body["execution"])["status"] == "succeeded"
    (runner,) = _runner_pids(daemon)
    os.kill(runner, signal.SIGKILL)
    for _ in range(200):
        if _runner_pids(daemon) not in ([], [runner]):
            break
        time.sleep(0.05)
    assert f"warning runner stopped runner=0 pid={runner} exit=-9 interrupted=0" in daemon.log
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Ida"})
    assert code == 202 and daemon.finished(body["execution"])["status"] == "succeeded"


def test_past_the_backlog_webhooks_are_refused_with_retry_after(repo: Repo, start: Start) -> None:
    for server in serve():
        put_everywhere(repo, slow_hello(server.url), {"staging": True})
        daemon = start(repo, "--max-backlog", "1", "--grace", "0.2s")
        assert daemon.request("POST", "/hooks/staging/hello", {"name": "Ada"})[0] == 202
        req = urllib.request.Request(daemon.url + "/hooks/staging/hello", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "5"
        assert "waiting to run" in json.loads(refused.value.read())["error"]
        assert len(daemon.executions()) == 1  # nothing recorded for the refused one
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        refused_line = 'loomgit_executions_refused_total{environment="staging",trigger="webhook"}'
        assert refused_line + " 1.0" in text
        assert "loomgit_executions_backlog 1.0" in text
        assert "loomgit_executions_backlog_limit 1.0" in text
        daemon.stop()
        assert daemon.proc.returncode == 0


def _files_up_to(limit: int) -> Callable[[], None]:
    """For the daemon's process tree: a write past `limit` bytes fails (EFBIG), as on a
    full disk, instead of killing the process (SIGXFSZ ignored)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_refuses_webhooks_with_503_and_keeps_serving(
    repo: Repo, start: Start, tmp_path: Path
) -> None:
    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo, state=tmp_path / "state", preexec=_files_up_to(400_000))
    padded = {"name": "Ann", "pad": "x" * 30_000}
    accepted, refused = [], None
    for _ in range(60):
        req = urllib.request.Request(
            daemon.url + "/hooks/staging/hello",
            data=json.dumps(padded).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                accepted.append(json.loads(resp.read())["execution"])
        except urllib.error.HTTPError as exc:
            refused = exc
            break
    assert refused is not None and accepted, daemon.log
    assert refused.code == 503 and refused.headers["Retry-After"] == "5"
    assert json.loads(refused.read()) == {"error": UNRECORDED}
    assert daemon.request("GET", "/healthz")[0] == 200
    assert daemon.request("GET", f"/api/v1/executions/{accepted[0]}", headers=AUTH)[0] == 200
    metrics = daemon.request("GET", "/metrics")[1]
    assert 'loomgit_executions_unrecorded_total{environment="staging",trigger="webhook"}' in metrics
    log = daemon.log
    assert "Traceback" not in log
    assert "execution not recorded environment=staging workflow=hello trigger=webhook" in log


def test_a_bug_in_a_handler_is_one_log_line_and_a_json_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In a webhook or in the API: the caller gets a JSON 500, the log one line, and the
    traceback goes to a report once per kind of bug; the message (it might hold a
    secret) goes nowhere."""
    import asyncio

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from loomgit.server import _api, front

    secret = "".join(["s3c", "r3t"])  # not in any source line the report quotes

    async def broken(request: Request) -> Response:
        raise KeyError(secret)

    async def broken_hook(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError(secret)

    app = front(broken_hook, _api([Route("/broken", broken)]))

    async def ask(path: str) -> tuple[int, Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [], "root_path": "", "scheme": "http",
            "server": ("127.0.0.1", 8080), "http_version": "1.1",
        }  # fmt: skip
        await app(scope, receive, send)
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return sent[0]["status"], json.loads(body)

    async def ask_all() -> list[tuple[int, Any]]:
        return [await ask(path) for path in ("/broken", "/broken", "/hooks/staging/x")]

    answers = asyncio.run(ask_all())
    internal = {"error": "internal error; the daemon's log says where the details are"}
    assert answers == [(500, internal)] * 3
    failed = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert len(failed) == 3 and "s3cr3t" not in caplog.text
    assert failed[0].fields["error"] == "KeyError"  # type: ignore[attr-defined]
    assert failed[2].fields["path"] == "/hooks/staging/x"  # type: ignore[attr-defined]
    reports = list(Path(os.environ["LOOMGIT_STATE_DIR"]).glob("crash-*.log"))
    assert len(reports) == 1 and failed[1].fields["details"] == str(reports[0])  # type: ignore[attr-defined]
    report = reports[0].read_text()  # where it happened, not what the message said
    assert "KeyError" in report and "in broken" in report and "s3cr3t" not in report


def test_executions_can_run_in_the_daemons_own_process(repo: Repo, start: Start) -> None:
    put_everywhere(repo, HELLO, {"staging": True})

    # Started as systemd starts a service, with a low soft limit on open files: the
    # daemon raises it to the hard one (each connection holds a descriptor).
    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    daemon = start(repo, "--runners", "0", preexec=few_files)
    assert descendants(daemon.proc.pid) == []
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    assert re.search(r"Max open files\s+4096\s+4096", limits), limits
    assert "open_files=4096" in daemon.log
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Bo"})
    assert code == 202
    assert daemon.finished(body["execution"])["status"] == "succeeded"


@pytest.mark.parametrize("runners", ["1", "0"])
def test_the_daemon_prunes_old_executions_as_it_runs(
    repo: Repo, start: Start, tmp_path: Path, runners: str
) -> None:
    put_everywhere(repo, HELLO, {"staging": True})
    state = tmp_path / "state"
    now, made = time.time(), []
    with History(state / "history.db") as history:
        for started in [now - 40 * 86400 + i for i in range(30)] + [
            now - 3600 + i for i in range(6)
        ]:
            ex = Execution(
                id=new_id(started),
                environment="staging",
                workflow="hello",
                trigger_type="webhook",
                status="succeeded",
                started_at=started,
                ended_at=started + 1,
            )
            made.append(history.start(ex).id)
    daemon = start(
        repo, "--prune-older-than", "30d", "--prune-keep", "4", "--runners", runners, state=state
    )
    # Older than 30 days (30), or past the newest 4 (2 of the recent 6).
    deadline = time.monotonic() + 20
    while "executions pruned" not in daemon.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "executions pruned deleted=32" in daemon.log, daemon.log
    kept = daemon.executions(environment="staging")
    assert [e["id"] for e in kept] == made[:-5:-1]
    counted = 'loomgit_executions_pruned_total{environment="staging"} 32.0'
    while counted not in (metrics := daemon.request("GET", "/metrics")[1]):  # told by the
        assert time.monotonic() < deadline, metrics  # writer's process, or its thread
        time.sleep(0.05)
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Bo"})
    assert code == 202
    assert daemon.finished(body["execution"])["status"] == "succeeded"
    daemon.stop()


def test_sigterm_records_what_outlives_the_grace_period_as_interrupted(
    repo: Repo, start: Start
) -> None:
    for server in serve():
        put_everywhere(repo, slow_hello(server.url), {"staging": True})
        daemon = start(repo, "--grace", "0.5s")
        code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Lou"})
        assert code == 202
        time.sleep(0.2)
        log = daemon.stop()
        assert daemon.proc.returncode == 0, log
        state = Path(os.environ["LOOMGIT_STATE_DIR"])
        from loomgit.history import History

        with History(state / "history.db") as history:
            ex = history.get(body["execution"])
        assert ex.status == "interrupted" and ex.stopped_at == "wait"


def test_a_sync_webhook_held_at_sigterm_is_answered_503(repo: Repo, start: Start) -> None:
    for server in serve():
        held = slow_hello(server.url).replace(
            "      path: hello\n", "      path: hello\n      respond: sync\n"
        )
        put_everywhere(repo, held, {"staging": True})
        daemon = start(repo, "--grace", "0.5s")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(daemon.request, "POST", "/hooks/staging/hello", {"name": "Lou"})
            time.sleep(0.5)  # the execution runs its slow step, the caller waits on it
            log = daemon.stop()
            code, body = waiting.result()
        assert daemon.proc.returncode == 0, log
        assert code == 503 and body["status"] == "interrupted", body


def test_git_push_webhook_starts_a_cycle_and_history_rewrites_are_reported(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text("push-secret-1234\n")
    commit_all(repo.path, "a commit to be dropped")
    daemon = start(repo, "--git-webhook-secret-file", str(secret_file))
    raw = b'{"ref": "refs/heads/main"}'
    path = "/api/v1/git-webhook"
    assert daemon.request("POST", path, raw=raw)[0] == 401
    refused = 'loomgit_api_refused_total{endpoint="git_webhook",reason="signature"}'
    assert _metric(daemon, refused) == "1.0"
    ping = {"X-Hub-Signature-256": sign("push-secret-1234", raw), "X-GitHub-Event": "ping"}
    assert daemon.request("POST", path, raw=raw, headers=ping)[0] == 200
    assert daemon.request("POST", "/hooks/staging/hello", {})[0] == 404
    # Drop the applied commit, then activate staging (history rewritten).
    git(repo.path, "reset", "-q", "--hard", "HEAD~1")
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    push = {"X-Hub-Signature-256": sign("push-secret-1234", raw), "X-GitHub-Event": "push"}
    assert daemon.request("POST", path, raw=raw, headers=push)[0] == 202
    for _ in range(100):
        if daemon.request("POST", "/hooks/staging/hello", {"name": "Pu"})[0] == 202:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the push did not activate the webhook")
    _, envs = daemon.request("GET", "/api/v1/environments")
    staging = next(e for e in envs if e["name"] == "staging")
    assert [e["reason"] for e in staging["events"]] == ["HistoryRewritten"]
    assert "HistoryRewritten" in daemon.log
    # The live view shows it below the bar, once for every environment it reached.
    reached = ", ".join(e["name"] for e in envs if e["events"])
    shown = " ".join(cli("status", "--server", daemon.url).out.split())
    assert f"events, newest first: {reached}: HistoryRewritten at " in shown
    assert f"{staging['events'][0]['message']}" in shown


def _ignores(pid: int, sig: int) -> bool:
    """Whether process `pid` ignores `sig` (its SigIgn mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def test_sighup_reads_the_secrets_again_and_reconciles_at_once(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    """Tokens and the push secret rotated without a restart, as `systemctl reload`
    would; a file that cannot be read then leaves the ones before in place."""
    tokens, secret = tmp_path / "tokens", tmp_path / "hook.secret"
    tokens.write_text("old-token-0001\n")
    secret.write_text("old-secret-0001\n")
    daemon = start(
        repo,
        "--api-token-file", str(tokens),
        "--git-webhook-secret-file", str(secret),
        env={"LOOMGIT_API_TOKENS": ""},
    )  # fmt: skip
    raw, path = b"{}", "/api/v1/git-webhook"

    def allowed(token: str) -> int:
        auth = {"Authorization": f"Bearer {token}"}
        return daemon.request("GET", "/api/v1/executions", headers=auth)[0]

    def pushed(key: str) -> int:
        return daemon.request(
            "POST", path, raw=raw, headers={"X-Hub-Signature-256": sign(key, raw)}
        )[0]

    assert (allowed("old-token-0001"), pushed("old-secret-0001")) == (200, 202)
    tokens.write_text("new-token-0002\n")
    secret.write_text("new-secret-0002\n")
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    # A closed terminal sends SIGHUP to the runner and the writer too: only the daemon acts.
    children = descendants(daemon.proc.pid)
    for _ in range(100):  # each has started, up to its own main (a runner takes a while)
        if all(_ignores(pid, signal.SIGHUP) for pid in children):
            break
        time.sleep(0.05)
    for pid in (*children, daemon.proc.pid):
        os.kill(pid, signal.SIGHUP)
    for _ in range(100):  # the interval is an hour: only the reload's cycle applies it
        if daemon.request("POST", "/hooks/staging/hello", {"name": "Hu"})[0] == 202:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("SIGHUP did not start a cycle")
    assert (allowed("old-token-0001"), pushed("old-secret-0001")) == (401, 401)
    assert (allowed("new-token-0002"), pushed("new-secret-0002")) == (200, 202)
    # The runner and the writer lived through it (one SIGHUP killed would be restarted
    # under a new pid); a git child of the cycle may be running alongside them.
    assert set(children) <= set(descendants(daemon.proc.pid))
    secret.unlink()
    daemon.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "secrets not read again" in daemon.log:
            break
        time.sleep(0.05)
    assert (allowed("new-token-0002"), pushed("new-secret-0002")) == (200, 202)
    secret.write_text("new-secret-0002\n")
    tokens.write_text("\n  # rotated by a script that truncates first\n")  # no token
    daemon.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "holds no tokens" in daemon.log:
            break
        time.sleep(0.05)
    assert allowed("new-token-0002") == 200  # not "this daemon has no API tokens"
    log = daemon.stop()
    assert daemon.proc.returncode == 0 and "info reload tokens=1 git_webhook=true" in log
    assert "holds no tokens" in log
    for secret_text in ("old-token-0001", "new-token-0002", "old-secret", "new-secret"):
        assert secret_text not in log


def test_an_environment_emptied_by_a_commit_is_refused(repo: Repo, cli: Cli, start: Start) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    (repo.path / repo.wf("staging")).unlink()
    repo.write("environments/staging/environment.yaml", state_yaml("staging", {}))
    commit_all(repo.path, "empty staging")
    staging = daemon.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "EmptyEnvironment"
    assert "allow_empty" in staging["conditions"][0]["message"]
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "St"})[0] == 202
    config = (repo.path / "loomgit.yaml").read_text()
    repo.write(
        "loomgit.yaml",
        config.replace("  - name: staging\n", "  - name: staging\n    allow_empty: true\n"),
    )
    commit_all(repo.path, "staging may be empty")
    assert daemon.reconcile()["staging"]["conditions"][0]["reason"] == "Ready"
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "St"})[0] == 404


def _metric(daemon: Daemon, line: str) -> str | None:
    """The value of the sample named `line` (with its labels) in /metrics, if any."""
    _, text = daemon.request("GET", "/metrics")
    return next((s.rsplit(" ", 1)[1] for s in text.splitlines() if s.startswith(line + " ")), None)


def test_an_environment_removed_from_loomgit_yaml_stops_once_the_removal_validates(
    repo: Repo, start: Start, tmp_path: Path
) -> None:
    """Nothing of a removed environment runs on (its webhooks, its schedules, its
    gauges, its applied commit), but only once a commit that says so validates: with
    its folder left behind (LG501), it serves as before and its status says why."""
    put_everywhere(repo, HELLO, {"staging": True, "production": True})
    state = tmp_path / "state"
    daemon = start(repo, state=state)
    assert _metric(daemon, "loomgit_schedules") == "2.0"
    config = (repo.path / "loomgit.yaml").read_text()
    repo.write("loomgit.yaml", config.replace("  - name: production\n", ""))
    commit_all(repo.path, "production is no more, but its folder is left")
    envs = daemon.reconcile()
    assert envs["development"]["conditions"][0]["reason"] == "ValidationFailed"
    assert "LG501" in envs["development"]["conditions"][0]["message"]
    waits = envs["production"]["events"][-1]
    assert waits["reason"] == "RemovalWaits" and "until development applies" in waits["message"]
    assert daemon.request("POST", "/hooks/production/hello", {"name": "Pr"})[0] == 202
    assert _metric(daemon, "loomgit_schedules") == "2.0"
    assert _metric(daemon, 'loomgit_environment_ready{environment="production"}') == "1.0"
    repo.write("loomgit.yaml", config)
    commit_all(repo.path, "production after all")
    envs = daemon.reconcile()
    assert envs["development"]["conditions"][0]["reason"] == "Ready"
    assert envs["production"]["events"][-1]["reason"] == "RemovalCancelled"
    repo.write("loomgit.yaml", config.replace("  - name: production\n", ""))
    commit_all(repo.path, "production is no more again")
    assert daemon.reconcile()["production"]["events"][-1]["reason"] == "RemovalWaits"
    removed = git(repo.path, "rm", "-rq", "environments/production")
    commit_all(repo.path, "production's folder goes too" + removed)
    envs = daemon.reconcile()
    assert list(envs) == ["development", "staging"]
    assert all(e["conditions"][0]["reason"] == "Ready" for e in envs.values())
    code, body = daemon.request("POST", "/hooks/production/hello", {"name": "Pr"})
    listed = "environments: development, staging"
    assert (code, body) == (404, {"error": f"no environment production; {listed}"})
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "St"})[0] == 202
    assert _metric(daemon, "loomgit_schedules") == "1.0"  # staging's only
    for gauge in ("ready", "applied_timestamp_seconds"):
        assert _metric(daemon, f'loomgit_environment_{gauge}{{environment="production"}}') is None
    assert _metric(daemon, 'loomgit_active_workflows{environment="production"}') is None
    assert "environment removed environment=production" in daemon.log
    applied = json.loads((state / "applied.json").read_text())["repositories"]
    assert [sorted(envs) for envs in applied.values()] == [["development", "staging"]]
    # Its history stays readable, filtered to nothing too: the name is no typo.
    assert len(daemon.executions(environment="production")) == 1
    assert daemon.executions(environment="production", status="failed") == []


def test_the_branches_layout_serves_each_environment_from_its_branch(
    tmp_path: Path, cli: Cli, start: Start, age_key: AgeKey, greeter_file: bytes
) -> None:
    """One branch per environment: each serves its own branch's tip; a bad commit on one
    branch leaves it serving its last good commit; an environment dropped from the
    first branch's loomgit.yaml stops, though its branch is left behind."""
    pipe = Pipeline.create(tmp_path, "branches", cli, age_key, greeter_file)
    assert pipe.run("promote", "hello", "--to", "staging", "--activate").code == 0
    daemon = start(pipe)

    def serving() -> dict[str, tuple[str | None, str]]:
        _, envs = daemon.request("GET", "/api/v1/environments")
        return {e["name"]: (e["last_applied_commit"], e["conditions"][0]["reason"]) for e in envs}

    def hooks() -> list[int]:
        return [daemon.request("POST", f"/hooks/{env}/hello", {"name": "Br"})[0] for env in ENVS]

    assert serving() == {env: (pipe.tip(env), "Ready") for env in ENVS}
    assert hooks() == [404, 202, 404]
    assert pipe.run("deactivate", "hello", "--env", "staging").code == 0
    daemon.reconcile()
    assert hooks() == [404, 404, 404]
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    daemon.reconcile()
    assert hooks() == [404, 202, 404]
    good = pipe.tip("staging")
    pipe.commit_on("staging", {"workflows/hello.yaml": b"steps: [oops"}, "a hand edit")
    envs = daemon.reconcile()
    assert envs["staging"]["last_applied_commit"] == good
    assert envs["staging"]["last_attempted_commit"] == pipe.tip("staging")
    assert envs["staging"]["conditions"][0]["reason"] == "ValidationFailed"
    # The syntax error heads the message, not the digest mismatch that follows from it.
    message = envs["staging"]["conditions"][0]["message"]
    bad = pipe.tip("staging")[:12]
    assert "[LG102]" in message and message.endswith(
        f"(and 1 more); hint: `loomgit validate --rev {bad} --env staging` lists every problem "
        "in a clone"
    ), message
    assert hooks() == [404, 202, 404]

    # A branch gone: that environment keeps serving, and no commit of another branch
    # is reported as the one it attempted.
    attempted = pipe.tip("staging")
    git(pipe.path, "branch", "-m", "env/staging", "env/staging-old")
    envs = daemon.reconcile()
    assert envs["staging"]["last_attempted_commit"] == attempted
    assert envs["staging"]["last_applied_commit"] == good
    assert envs["staging"]["conditions"][0]["message"] == (
        "env/staging: error[LG502]: environment 'staging' has no branch 'env/staging'"
    )
    assert hooks() == [404, 202, 404]
    git(pipe.path, "branch", "-m", "env/staging-old", "env/staging")

    config = git(pipe.path, "show", "env/development:loomgit.yaml")
    dropped = config.replace("\n  - name: production", "") + "\n"
    assert dropped != config
    pipe.commit_on("development", {"loomgit.yaml": dropped.encode()}, "no production")
    envs = daemon.reconcile()
    assert list(envs) == ["development", "staging"]
    assert envs["development"]["conditions"][0]["reason"] == "Ready"
    assert daemon.request("POST", "/hooks/production/hello", {})[1] == {
        "error": "no environment production; environments: development, staging"
    }
    assert "environment removed environment=production" in daemon.log
    assert git(pipe.path, "branch", "--list", "env/production")  # left as it was


def test_a_restart_onto_an_emptied_environment_keeps_what_it_served(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    state = tmp_path / "state"
    daemon = start(repo, state=state)
    good = daemon.reconcile()["staging"]["last_applied_commit"]
    daemon.stop()
    (repo.path / repo.wf("staging")).unlink()
    repo.write("environments/staging/environment.yaml", state_yaml("staging", {}))
    commit_all(repo.path, "empty staging")
    again = start(repo, state=state)
    _, envs = again.request("GET", "/api/v1/environments")  # as the first cycle left it
    staging = next(e for e in envs if e["name"] == "staging")
    assert staging["conditions"][0]["reason"] == "EmptyEnvironment"
    assert f"it served {good[:12]} before the restart" in staging["conditions"][0]["message"]
    assert staging["last_applied_commit"] == good
    assert [e["reason"] for e in staging["events"]] == ["RestoredLastApplied"]
    assert again.reconcile()["staging"]["conditions"][0]["reason"] == "EmptyEnvironment"
    assert again.request("POST", "/hooks/staging/hello", {"name": "St"})[0] == 202


def _answers_as_described(daemon: Any, spec: dict[str, Any], ident: str) -> None:
    """Real answers of each kind validate against the schema /openapi.json gives for
    their path, method and status (a client generated from it would read them)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    asked = [
        ("GET", "/healthz", "/healthz", None, {}),
        ("GET", "/readyz", "/readyz", None, {}),
        ("GET", "/api/v1/environments", "/api/v1/environments", None, {}),
        ("GET", "/api/v1/executions?limit=2", "/api/v1/executions", None, AUTH),
        ("GET", f"/api/v1/executions/{ident}", "/api/v1/executions/{id}", None, AUTH),
        ("GET", "/api/v1/executions", "/api/v1/executions", None, {}),  # 401
        ("POST", "/hooks/staging/hello", "/hooks/{environment}/{path}", {"name": "Sc"}, {}),
        ("POST", "/hooks/staging/nope", "/hooks/{environment}/{path}", {}, {}),  # 404
    ]
    for method, url, path, data, headers in asked:
        code, answer = daemon.request(method, url, data, headers=headers)
        pointer = f"/paths/{path.replace('/', '~1')}/{method.lower()}/responses/{code}"
        described = spec["paths"][path][method.lower()]["responses"][str(code)]
        assert described["content"]["application/json"]["schema"], (url, code)
        ref = f"urn:spec#{pointer}/content/application~1json/schema"
        Draft202012Validator({"$ref": ref}, registry=registry).validate(answer)


def test_metrics_by_workflow_when_asked(repo: Repo, cli: Cli, start: Start) -> None:
    """`--metrics-by-workflow` counts finished executions by workflow too, whether they
    ran in runner processes or in the daemon's own."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    for extra in ((), ("--runners", "0")):
        daemon = start(repo, "--metrics-by-workflow", *extra)
        code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Mo"})
        assert code == 202, body
        daemon.finished(body["execution"])
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        counted = 'environment="staging",status="succeeded",workflow="hello"} 1.0'
        assert "loomgit_executions_total{" + counted in text, extra
        daemon.stop()


def test_metrics_and_openapi_describe_the_daemon(repo: Repo, cli: Cli, start: Start) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Mo"})
    daemon.finished(body["execution"])
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'loomgit_executions_total{environment="staging",status="succeeded"} 1.0' in text
    assert 'loomgit_reconcile_total{environment="staging",result="Ready"}' in text
    assert 'loomgit_environment_ready{environment="staging"} 1.0' in text
    assert 'loomgit_environment_applied_timestamp_seconds{environment="staging"} 1.' in text
    assert "loomgit_webhook_duration_seconds_bucket" in text
    assert "loomgit_schedule_lateness_seconds" in text
    assert "_created" not in text  # no timestamp series beside each counter
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text
    code, spec = daemon.request("GET", "/openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.")
    _answers_as_described(daemon, spec, body["execution"])
    # A trailing slash is a 404 that names the path meant, not a redirect `curl -X POST`
    # would end on in silence.
    code, body = daemon.request("POST", "/api/v1/reconcile/", headers=AUTH)
    assert (code, body) == (
        404,
        {"error": "no /api/v1/reconcile/ here; did you mean /api/v1/reconcile?"},
    )
    code, body = daemon.request("GET", "/api/v1/executions/abc/")
    assert body == {
        "error": "no /api/v1/executions/abc/ here; did you mean /api/v1/executions/abc?"
    }
    code, body = daemon.request("GET", "/api/v2/environments")
    assert (code, body) == (
        404,
        {"error": "no /api/v2/environments here; the API is described at /openapi.json"},
    )
    assert daemon.request("GET", "/" + "x" * 100)[1]["error"].startswith(f"no /{'x' * 79}… here")
    long = f"/api/v1/executions/{'A' * 100}"
    cut = f"{long[:80]}…"
    assert daemon.request("GET", long + "/")[1] == {"error": f"no {cut} here; did you mean {cut}?"}
    from starlette.routing import Route

    from loomgit.daemon import Daemon as Core
    from loomgit.daemon import Settings
    from loomgit.history import History
    from loomgit.reconcile import Reconciler
    from loomgit.server import HOOK_PATH, api

    with History(None) as history:
        routes = api(Core(Reconciler(repo.path, {}), history, Settings())).routes
        paths = {r.path for r in routes if isinstance(r, Route)} | {HOOK_PATH}
    paths = {p.replace("{ident}", "{id}").replace("{env}", "{environment}") for p in paths}
    assert paths == set(spec["paths"])


def _origin(repo: Repo, cli: Cli, tmp_path: Path) -> tuple[Path, list[str]]:
    """A bare clone of `repo` with hello active in staging, and the options serving it."""
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    branch = git(repo.path, "rev-parse", "--abbrev-ref", "HEAD")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo.path), str(origin))
    return origin, ["--remote", str(origin), "--branch", branch]


def test_serve_from_a_remote_keeps_serving_when_it_goes_away(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    origin, remote = _origin(repo, cli, tmp_path)
    daemon = start(repo, *remote)
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Re"})[0] == 202
    origin.rename(tmp_path / "gone.git")
    staging = daemon.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "FetchFailed"
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Re"})[0] == 202
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
        assert 'loomgit_environment_ready{environment="staging"} 0.0' in resp.read().decode()
    (tmp_path / "gone.git").rename(origin)  # back: Ready again, and the log says so
    assert daemon.reconcile()["staging"]["conditions"][0]["reason"] == "Ready"
    assert "info ready again environment=staging" in daemon.log
    assert "after=FetchFailed" in daemon.log.split("ready again environment=staging")[1]


def test_a_restart_while_the_remote_is_unreachable_serves_what_was_fetched(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path
) -> None:
    origin, remote = _origin(repo, cli, tmp_path)
    state = tmp_path / "state"
    daemon = start(repo, *remote, state=state)
    applied = daemon.reconcile()["staging"]["last_applied_commit"]
    daemon.stop()
    origin.rename(tmp_path / "gone.git")
    origin.mkdir()  # there, but no repository: every fetch fails

    again = start(repo, *remote, state=state)
    assert "source not fetched; starting from the commit fetched before" in again.log
    assert again.request("GET", "/readyz")[0] == 200
    staging = again.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "FetchFailed"
    assert staging["last_applied_commit"] == applied
    assert again.request("POST", "/hooks/staging/hello", {"name": "Ola"})[0] == 202
    origin.rmdir()
    (tmp_path / "gone.git").rename(origin)
    assert again.reconcile()["staging"]["conditions"][0]["reason"] == "Ready"


def _fake_ssh(tmp_path: Path) -> Path:
    """git runs `ssh OPTIONS git@HOST "git-upload-pack '/PATH'"`. This stand-in, named ssh
    (so git passes it OpenSSH's options), notes how it was called in `ssh.log` beside it
    and runs the command here, as the git host's sshd would: git over ssh, no network."""
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text('#!/bin/sh\necho "$@" >> "$0.log"\nfor last; do :; done\nexec sh -c "$last"\n')
    ssh.chmod(0o755)
    return ssh


def test_serve_from_an_ssh_remote_with_a_deploy_key(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin, remote = _origin(repo, cli, tmp_path)
    ssh = _fake_ssh(tmp_path)
    url, key = f"ssh://git@git.example.invalid{origin}", tmp_path / "deploy_key"
    via = {"GIT_SSH_COMMAND": f"{ssh} -i {key} -o IdentitiesOnly=yes"}  # as the README says
    daemon = start(repo, "--remote", url, "--branch", remote[-1], env=via)
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Ssh"})[0] == 202
    called = (tmp_path / "bin" / "ssh.log").read_text()
    assert f"-i {key} -o IdentitiesOnly=yes" in called
    assert f"git@git.example.invalid git-upload-pack '{origin}'" in called

    # The git host's key changed: OpenSSH says so, git only that it could not read.
    ssh.write_text('#!/bin/sh\necho "Host key verification failed." >&2\nexit 255\n')
    ready = daemon.reconcile()["staging"]["conditions"][0]
    assert ready["reason"] == "FetchFailed"
    known_hosts = (
        "add the git host's key to the daemon user's ~/.ssh/known_hosts (ssh-keyscan "
        "HOST), or name a file of keys: GIT_SSH_COMMAND='ssh -o UserKnownHostsFile=FILE'"
    )
    assert ready["message"] == (  # with what to do: the status is where an operator looks
        "git fetch failed: Host key verification failed. "
        f"(fatal: Could not read from remote repository.); hint: {known_hosts}"
    )
    assert f"hint: {known_hosts}" in daemon.log.split("not applied environment=staging")[1]
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Ssh"})[0] == 202
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))  # a first start says what to do
    result = cli("serve", "--remote", url, "--branch", remote[-1], "--state-dir", tmp_path / "s")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"error: cannot fetch {url}: git fetch failed: Host key verification failed. "
        "(fatal: Could not read from remote repository.)",
        f"hint: {known_hosts}",
    ]


@pytest.mark.parametrize(
    "stderr, said, hint",
    [
        ("git@github.com: Permission denied (publickey).\r\nfatal: Could not read from remote "
         "repository.\n\nPlease make sure you have the correct access rights\nand the "
         "repository exists.\n",
         "git@github.com: Permission denied (publickey). (fatal: Could not read from remote "
         "repository.)", "GIT_SSH_COMMAND='ssh -i KEY -o IdentitiesOnly=yes'"),
        ("fatal: could not read Username for 'https://git.example.com': terminal prompts "
         "disabled\n", "fatal: could not read Username for 'https://git.example.com': "
         "terminal prompts disabled", "put a token in the URL"),
        ("hint: x\nremote: Repository not found.\nfatal: repository 'https://h/o/r.git/' not "
         "found\n", "remote: Repository not found. (fatal: repository 'https://h/o/r.git/' "
         "not found)", None),
        ("error: cannot lock ref\n", "error: cannot lock ref", None),
        ("", "", None),
    ],
)  # fmt: skip
def test_git_failures_say_what_the_transport_said(stderr: str, said: str, hint: str | None) -> None:
    from loomgit.source import failure

    got, got_hint = failure(stderr)
    assert got == said
    assert (got_hint is None) if hint is None else (hint in (got_hint or ""))


def _systemd_service(text: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file, each key's values in order (continued lines
    joined, a value's enclosing quotes dropped, as systemd reads them)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value.strip('"'))
    return settings


def test_the_operations_guide_runs_as_written(
    repo: Repo, cli: Cli, tmp_path: Path, age_key: AgeKey
) -> None:
    """docs/operations.md's unit, started as systemd would (its credentials folder and
    state folder temporary, the git host a stand-in), serves what the guide says; its alert
    rules name metrics the daemon has; and `--log-format json` writes only JSON lines."""
    from loomgit import yamlio

    doc = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    unit = _systemd_service(re.search(r"```ini\n(.*?)```", doc, re.S)[1])  # type: ignore[index]
    origin, remote = _origin(repo, cli, tmp_path)  # hello active in staging
    creds, secret = tmp_path / "credentials", "push-secret-5678"
    creds.mkdir()
    files = {"api.tokens": TOKEN, "git-webhook.secret": secret, "deploy_key": "a key"}
    for loaded in unit["LoadCredential"]:  # what systemd copies into %d
        name = loaded.split(":")[0]
        data = age_key.path.read_text() if name.endswith(".agekey") else files.pop(name)
        (creds / name).write_text(data + "\n")
        (creds / name).chmod(0o400)
    assert not files and sorted(p.name for p in creds.glob("*.agekey")) == [
        "production.agekey", "staging.agekey"]  # fmt: skip

    def here(text: str) -> str:
        return text.replace("%d", str(creds)).replace("/var/lib/loomgit", str(tmp_path / "st"))

    env = dict(here(e).split("=", 1) for e in unit["Environment"])
    ssh = _fake_ssh(tmp_path)
    env["GIT_SSH_COMMAND"] = env["GIT_SSH_COMMAND"].replace("ssh ", f"{ssh} ", 1)
    argv = shlex.split(here(unit["ExecStart"][0]))
    assert argv[0] == "/opt/loomgit/bin/loomgit"
    at = argv.index("--remote") + 1  # the same host, the test's repository on it
    argv[at] = argv[at].replace("/ops/flows.git", str(origin))
    argv[argv.index("--branch") + 1] = remote[-1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOMGIT_")} | env
    journal = tmp_path / "journal"
    with journal.open("w") as out:
        proc = subprocess.Popen([*LOOMGIT, *argv[1:], "--port", "0"], stdout=out,
                                stderr=subprocess.STDOUT, env=environ, text=True)  # fmt: skip

    def events(name: str) -> list[dict[str, Any]]:
        # every line is one JSON object, the start-up banner's too
        return [e for e in map(json.loads, journal.read_text().splitlines()) if e["event"] == name]

    try:
        for _ in range(600):
            if events("listening") or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert events("listening"), journal.read_text()  # else: why it did not start
        daemon = Daemon(proc, events("listening")[0]["url"], "", journal)
        assert {e["environment"]: e["webhooks"] for e in events("serving")} == {
            "staging": 1, "production": 0}  # fmt: skip
        code, body = daemon.request("GET", "/readyz")
        assert code == 200 and sorted(body["environments"]) == ["production", "staging"]
        assert daemon.request("POST", "/hooks/staging/hello", {"name": "Ops"})[0] == 202
        assert daemon.request("POST", "/hooks/development/hello", {"name": "Ops"})[0] == 404
        raw = b'{"ref": "refs/heads/main"}'  # the git host's push webhook, signed
        push = {"X-Hub-Signature-256": sign(secret, raw), "X-GitHub-Event": "push"}
        assert daemon.request("POST", "/api/v1/git-webhook", raw=raw, headers=push)[0] == 202
        called = (ssh.parent / "ssh.log").read_text()
        assert f"-i {creds}/deploy_key -o IdentitiesOnly=yes -o UserKnownHostsFile=" in called

        with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as resp:
            exported = set(re.findall(r"^# TYPE (\S+) (\w+)", resp.read().decode(), re.M))
        rules = yamlio.load(re.search(r"```yaml\n(.*?)```", doc, re.S)[1].encode())  # type: ignore[index]
        named = {
            n for r in rules["groups"][0]["rules"] for n in re.findall(r"loomgit_\w+", r["expr"])
        }
        for metric in named:  # a histogram's samples are NAME_bucket, NAME_sum, NAME_count
            histogram = (re.sub(r"_(bucket|sum|count)$", "", metric), "histogram")
            assert histogram in exported or any(n == metric for n, _ in exported), metric
        assert len(named) == 7

        proc.send_signal(signal.SIGHUP)  # ExecReload
        for _ in range(200):
            if events("reload"):
                break
            time.sleep(0.05)
        assert events("reload")[0]["tokens"] == 1
        proc.send_signal(signal.SIGTERM)  # systemctl stop, within TimeoutStopSec
        assert proc.wait(timeout=int(unit["TimeoutStopSec"][0])) == 0
        assert events("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_remote_urls_credentials_are_never_shown(cli: Cli, tmp_path: Path) -> None:
    from loomgit.source import RemoteSource, shown_url

    assert shown_url("https://bob:s3cr3t@git.example.com/o/r.git") == (
        "https://***@git.example.com/o/r.git"
    )
    assert shown_url("fetch https://ghp_abc@github.com/o/r failed") == (
        "fetch https://***@github.com/o/r failed"
    )
    assert shown_url("ssh://git@host/o/r.git") == "ssh://git@host/o/r.git"
    assert shown_url("ssh://git:pw@host/o/r.git") == "ssh://git:***@host/o/r.git"
    source = RemoteSource("https://bob:s%33cr3t@127.0.0.1:1/o/r.git", "main", tmp_path / "s")
    assert source._hidden("s3cr3t s%33cr3t bob") == "*** *** bob"
    # Port 1 on the loopback: nothing listens, so the first fetch fails.
    result = cli("serve", "--remote", "https://bob:s3cr3t@127.0.0.1:1/o/r.git", "--branch",
                 "main", "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert result.code == 2 and "cannot fetch https://***@127.0.0.1:1/o/r.git" in result.err
    assert "s3cr3t" not in result.out + result.err
    config = tmp_path / "state" / "source" / ".git" / "config"
    assert config.stat().st_mode & 0o077 == 0  # the token is in it, for git


@pytest.mark.parametrize(
    "url, message",
    [
        ("--upload-pack=touch /tmp/x", "not an accepted --remote"),
        ("ext::sh -c touch% /tmp/x", "not an accepted --remote"),
        ("https://example.com/$(id).git", "not an accepted --remote"),
        ("git://example.com/flows.git", "use an https:// or ssh:// URL"),
        (
            "git@github.com:acme/flows.git",
            "hint: write it as a URL: ssh://git@github.com/acme/flows.git (on a plain ssh "
            "server, for a path in the home folder: ssh://git@github.com/~/acme/flows.git)",
        ),
        (
            "git@git.acme.test:~/flows.git",
            "hint: write it as a URL: ssh://git@git.acme.test/~/flows.git\n",
        ),
        (
            "git@git.acme.test:/srv/flows.git",
            "hint: write it as a URL: ssh://git@git.acme.test/srv/flows.git\n",
        ),
        ("/no/such/folder", "no such folder"),
    ],
)
def test_remote_urls_git_could_misread_are_refused(cli: Cli, url: str, message: str) -> None:
    result = cli("serve", "--remote", url, "--branch", "main")
    assert result.code == 2 and message in result.err, result.err


def test_an_unusable_age_key_file_is_a_bad_argument(repo: Repo, cli: Cli, tmp_path: Path) -> None:
    """Exit 2, as for every other bad argument, before anything starts."""
    shared = tmp_path / "shared.agekey"
    shared.write_text("# not a key\n")
    shared.chmod(0o644)
    for given, says in (
        (tmp_path / "nope.agekey", "does not exist"),
        (tmp_path, "is not a file"),
        (shared, "can be read by other users"),
    ):
        for command in ("serve", "run"):
            args = ["--age-key-file", f"staging={given}", "--repo", repo.path]
            if command == "run":
                args = ["hello", *args, "--state-dir", tmp_path / "state"]
            result = cli(command, *args)
            assert result.code == 2 and says in result.err, (command, result.err)


def test_remote_needs_a_valid_branch(cli: Cli) -> None:
    result = cli("serve", "--remote", "https://example.com/f.git", "--branch", "-x")
    assert result.code == 2 and "not a valid --branch" in result.err
    result = cli("serve", "--remote", "https://example.com/f.git")
    assert result.code == 2 and result.err.splitlines() == [
        "error: --remote needs --branch, the branch of that repository to follow",
        "hint: --branch main, say: the branch that holds loomgit.yaml",
    ]
    result = cli("serve", "--branch", "main")
    assert result.code == 2 and result.err.splitlines() == [
        "error: --branch goes with --remote",
        "hint: without --remote the daemon serves the repository --repo names (default: the "
        "current folder) as it is committed there",
    ]


def test_status_server_renders_the_live_view(repo: Repo, cli: Cli, start: Start) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    repo.write(repo.wf("production"), "not: [valid")
    commit_all(repo.path, "break production")
    daemon.reconcile()
    result = cli("status", "--server", daemon.url)
    assert result.code == 0, result.err
    assert "v1 ● active" in result.out and "v1 ○ inactive" in result.out
    assert "ValidationFailed" in result.out and "Ready" in result.out
    # Why production is not Ready is said below the table, not in a column as wide as it.
    why = [line for line in result.out.splitlines() if line.startswith("production: ")]
    assert len(why) == 1 and "ValidationFailed at " in why[0] and "[LG102]" in why[0], why
    assert re.search(r" since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: ", why[0]), why
    assert all("[LG102]" not in line for line in result.out.splitlines() if "│" in line)
    result = cli("status", "--server", daemon.url, "--format", "json")
    envs = {e["name"]: e for e in json.loads(result.out)}
    assert envs["staging"]["workflows"]["hello"] == {"version": 1, "active": True}
    result = cli("status", "--server", "http://127.0.0.1:9")
    assert result.code == 2 and "cannot reach the daemon at http://127.0.0.1:9" in result.err
    # A narrow table (one environment) keeps its title on one line.
    from rich.console import Console

    from loomgit.live import live_table

    console = Console(width=200, record=True)
    console.print(live_table([{"name": "live", "commit": "0" * 40}], daemon.url))
    assert console.export_text().splitlines()[0].rstrip() == f"loomgit serve at {daemon.url}"
    # Events: newest first, the five newest, one line for one event in two environments.
    at = "2026-11-22T08:0{}:00.000Z"
    events = [
        {"type": "Event", "reason": f"R{n}", "message": f"m{n}", "last_transition": at.format(n)}
        for n in range(7)
    ]
    # The cycle that took R6 to live crossed a second: still one event, at the later time.
    late = {**events[6], "last_transition": "2026-11-22T08:06:01.000Z"}
    envs = [{"name": "test", "events": events}, {"name": "live", "events": [events[5], late]}]
    console = Console(width=200, record=True)
    console.print(live_table(envs, daemon.url))
    lines = console.export_text().splitlines()
    first = lines.index("events, newest first:")
    assert [line.rstrip() for line in lines[first + 1 :]] == [
        "  test, live: R6 at 2026-11-22 08:06:01 UTC: m6",
        "  test, live: R5 at 2026-11-22 08:05:00 UTC: m5",
        "  test: R4 at 2026-11-22 08:04:00 UTC: m4",
        "  test: R3 at 2026-11-22 08:03:00 UTC: m3",
        "  test: R2 at 2026-11-22 08:02:00 UTC: m2",
        f"  … 2 earlier: `loomgit status --server {daemon.url} --format json` has them",
    ]
    assert cli("status", "--server", "ftp://x").code == 2
    for bad in ("http://[::1", "http://127.0.0.1:99999"):  # once "did not answer JSON"
        result = cli("status", "--server", bad)
        assert result.code == 2 and f"--server {bad}: not a valid URL" in result.err


@contextlib.contextmanager
def answering(answer: Callable[[str], tuple[int, bytes]]) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every request with `answer(path)` (status, body),
    not a daemon: what the CLI's `--server` makes of answers a daemon would not give (or an
    older one gives). Its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answers(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answer(self.path)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up on a slow answer (a broken pipe) is not a fault

    with Server(("127.0.0.1", 0), Answers) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def test_status_server_refuses_an_answer_that_is_not_environments(cli: Cli, repo: Repo) -> None:
    """A server that answers a list of something else is named, not a traceback; a
    commit id it answers that git could read as an option is only an unknown commit."""
    answers = [b'[1, {"name": 2}]', b'[{"name": "staging", "commit": "--help"}]']
    with answering(lambda _: (200, answers[0])) as url:
        for wait in ((), ("--wait",)):
            result = cli("status", "--server", url, *wait)
            assert result.code == 2, result.err
            assert f"{url}/api/v1/environments did not answer a list of environments" in result.err
        answers.pop(0)
        result = cli("status", "--server", url, "--wait", "--repo", repo.path, "--timeout", "1s")
        assert result.code == 1, result.err
        assert "error: --timeout 1s passed: staging serves --help" in result.err


def test_a_key_the_daemon_lacks_is_the_daemons_to_mend(repo: Repo, cli: Cli, start: Start) -> None:
    """A daemon started without production's age key refuses the commit that activates a
    workflow there (its credentials cannot be decrypted): the condition's hint says how to
    start the daemon with the key, and `status --wait` says a restart with it mends this as
    well as a commit would, where a commit alone mends what fails validation."""
    daemon = start(repo, keyed=("development", "staging"))
    before = git(repo.path, "rev-parse", "HEAD")
    assert cli("activate", "hello", "--env", "production", "--repo", repo.path).code == 0
    envs = daemon.reconcile()
    cond = envs["production"]["conditions"][0]
    assert cond["reason"] == "DecryptionFailed" and envs["production"]["commit"] == before
    assert cond["message"].startswith("no age key for production, so ")
    assert cond["message"].endswith(
        "; hint: restart the daemon with --age-key-file production=PATH, or --age-key-dir DIR "
        "with production.agekey in it, or LOOMGIT_AGE_KEY_FILE_PRODUCTION set"
    )
    wait = ("status", "--server", daemon.url, "--wait", "--repo", repo.path, "--timeout", "30s")
    result = cli(*wait)
    assert result.code == 1, result.err
    assert result.err.splitlines()[-1] == (
        "hint: fix the credentials in a new commit, or the daemon's age key for production "
        f"(a restart); production keeps serving {before[:12]} meanwhile"
    )


def test_status_wait_ends_once_the_commit_is_applied_or_refused(
    repo: Repo, cli: Cli, start: Start
) -> None:
    """`status --server URL --wait`: exit 0 once each environment serves the repository's
    HEAD (or a later commit), 1 as soon as one refuses it or when --timeout passes."""
    daemon = start(repo, "--interval", "1s")
    wait = ("status", "--server", daemon.url, "--wait", "--repo", repo.path, "--timeout", "30s")
    result = cli(*wait)
    assert result.code == 0, result.err
    assert "applied in development, staging, production after " in result.err
    assert "serving" in result.out  # the live view follows

    repo.write(repo.wf("development"), HELLO + "# an edit\n")
    head = commit_all(repo.path, "edit hello")
    result = cli(*wait, "--format", "json")
    assert result.code == 0 and result.err == "", result.err
    waited = json.loads(result.out)
    assert waited["result"] == "applied" and waited["seconds"] > 0, waited
    assert [(e["name"], e["serving"], e["commit"], e["state"]) for e in waited["environments"]] == [
        (env, head, head, "applied") for env in ("development", "staging", "production")
    ]

    repo.write(repo.wf("production"), "not: [valid")
    bad = commit_all(repo.path, "break production")
    result = cli(*wait)
    assert result.code == 1, result.err
    assert f"production: refused {bad[:12]}: ValidationFailed: " in result.err
    assert f"error: production refused {bad[:12]}: ValidationFailed: " in result.err
    assert f"hint: fix it in a new commit; production keeps serving {head[:12]} meanwhile" in (
        result.err
    )
    # Staging applied it: its files did not change.
    result = cli(*wait, "--env", "staging", "--format", "json")
    assert result.code == 0 and json.loads(result.out)["environments"][0]["serving"] == bad

    # A commit the daemon does not follow (not on the checked-out branch) never comes.
    side = git(repo.path, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "side")
    result = cli(*wait, "--env", "staging", "--commit", side, "--timeout", "2s")
    assert result.code == 1, result.err
    assert f"error: --timeout 2s passed: staging serves {bad[:12]}, not {side[:12]}" in result.err
    # An earlier commit will do: what is served descends from it.
    result = cli(*wait, "--env", "staging", "--commit", "HEAD~2")
    assert result.code == 0 and f"staging: serves {bad[:12]} (a later commit than " in result.err

    for args, says in (
        (("status", "--wait"), "--wait goes with --server"),
        (("status", "--server", daemon.url, "--env", "staging"), "--env goes with --wait"),
        (("status", "--server", daemon.url, "--timeout", "1m"), "--timeout goes with --wait"),
        ((*wait, "--env", "prod"), f"--env prod: the daemon at {daemon.url} does not serve it"),
        ((*wait, "--timeout", "soon"), "--timeout"),
        ((*wait, "--commit", "nope"), "unknown revision 'nope'"),
    ):
        result = cli(*args)
        assert result.code == 2 and says in result.err, (args, result.err)
    assert "hint: it serves development, staging, production" in cli(*wait, "--env", "prod").err
    # A clone that lacks what the daemon serves cannot tell whether it comes after.
    behind = repo.path.parent / "behind"
    git(repo.path.parent, "clone", "-q", "--no-local", str(repo.path), str(behind))
    git(behind, "reset", "-q", "--hard", "HEAD~1")
    git(behind, "remote", "remove", "origin")
    git(behind, "reflog", "expire", "--expire=now", "--all")
    git(behind, "gc", "-q", "--prune=now")
    result = cli(*wait, "--env", "staging", "--repo", behind, "--timeout", "1s")
    assert result.code == 1, result.err
    assert f"not {head[:12]} ({bad[:12]} is not in {behind}; fetch it to tell)" in result.err

    # A daemon that stops answering meanwhile is asked again until the time is up.
    threading.Timer(0.5, daemon.stop).start()
    result = cli(*wait, "--env", "staging", "--commit", side, "--timeout", "3s")
    assert result.code == 1, result.err
    assert f"; the daemon stopped answering: cannot reach the daemon at {daemon.url}" in result.err
    said = f"cannot reach the daemon at {daemon.url}: "
    assert result.err.count(said) == 2, result.err  # once as it goes, once in the error
    assert "; asking again until --timeout passes\n" in result.err
    assert "answers again" not in result.err


def test_status_wait_says_when_the_daemon_stops_answering_and_when_it_answers_again(
    cli: Cli, repo: Repo
) -> None:
    """A restart mid-wait (here two answers of 503) is one line on stderr as it begins
    and one as it ends, not one per question; the wait goes on."""
    head = git(repo.path, "rev-parse", "HEAD")
    before = git(repo.path, "rev-parse", "HEAD~1")
    answers = [(200, before), (503, ""), (503, ""), (200, head)]

    def restarting(path: str) -> tuple[int, bytes]:
        code, commit = answers.pop(0) if len(answers) > 1 else answers[0]
        env = {"name": "staging", "commit": commit, "conditions": []}
        return code, json.dumps([env] if code == 200 else {"error": "starting"}).encode()

    with answering(restarting) as url:
        result = cli("status", "--server", url, "--wait", "--repo", repo.path, "--timeout", "30s")
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert lines[:4] == [
        f"staging: serves {before[:12]}, waiting for {head[:12]}",
        f"{url}/api/v1/environments answered 503: starting; asking again until --timeout passes",
        "the daemon answers again",
        f"staging: serves {head[:12]}",
    ], result.err


def test_status_wait_reconcile_has_the_daemon_apply_the_commit_at_once(
    repo: Repo, cli: Cli, start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--reconcile` runs a cycle first (POST /api/v1/reconcile, with a token), so a
    daemon whose --interval is an hour serves a new commit without its push webhook."""
    monkeypatch.delenv("LOOMGIT_API_TOKEN", raising=False)
    daemon = start(repo)  # --interval 1h
    repo.write(repo.wf("development"), HELLO + "# an edit\n")
    head = commit_all(repo.path, "edit hello")
    wait = ("status", "--server", daemon.url, "--wait", "--repo", repo.path, "--env", "development")
    result = cli(*wait, "--timeout", "2s")
    assert result.code == 1 and "error: --timeout 2s passed: development serves " in result.err

    result = cli(*wait, "--reconcile")
    assert result.code == 2 and "/api/v1/reconcile answered 401: " in result.err, result.err
    assert "hint: pass --token-file" in result.err
    token = tmp_path / "api.token"
    token.write_text(f"# a throwaway test token\n{TOKEN}\n")
    result = cli(*wait, "--reconcile", "--token-file", token, "--format", "json")
    assert result.code == 0 and result.err == "", result.err
    waited = json.loads(result.out)
    assert (waited["result"], waited["environments"][0]["serving"]) == ("applied", head), waited

    repo.write(repo.wf("development"), HELLO + "# another edit\n")
    head = commit_all(repo.path, "edit hello again")
    monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)
    result = cli(*wait, "--reconcile", "--timeout", "30s")
    assert result.code == 0, result.err
    assert f"development: serves {head[:12]}\napplied in development after " in result.err

    for args, says in (
        (("status", "--server", daemon.url, "--reconcile"), "--reconcile goes with --wait"),
        ((*wait, "--token-file", token), "--token-file goes with --reconcile"),
        ((*wait, "--reconcile", "--token-file", tmp_path), "--token-file"),
    ):
        result = cli(*args)
        assert result.code == 2 and says in result.err, (args, result.err)


def test_status_wait_reconcile_longer_than_the_timeout_is_a_timed_out_wait(
    cli: Cli, repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile cycle that outlasts --timeout is a wait that timed out (exit 1, as CI
    tells a deploy that did not converge), not a daemon that cannot be reached (exit 2)."""
    monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)

    def slow(path: str) -> tuple[int, bytes]:
        time.sleep(3)
        return 200, b"[]"

    with answering(slow) as url:
        result = cli(
            "status", "--server", url, "--wait", "--reconcile", "--timeout", "1s",
            "--repo", repo.path,
        )  # fmt: skip
    assert result.code == 1, result.err

    def late(url: str) -> str:
        return (
            "--timeout 1s passed before the daemon's reconcile cycle ended "
            f"({url}/api/v1/reconcile did not answer)"
        )

    assert result.err.splitlines() == [
        f"error: {late(url)}",
        "hint: it goes on in the daemon; `loomgit status --server URL` shows what it applied",
    ]

    # With --format json, the report a wait gives: each environment as the daemon says
    # it serves now, or none when that question goes unanswered too (exit 1 all the same).
    old = git(repo.path, "rev-parse", "HEAD")
    repo.write(repo.wf("development"), HELLO + "# an edit\n")
    head = commit_all(repo.path, "edit hello")
    ready = {"type": "Ready", "status": "True", "reason": "Ready", "message": "applied"}
    env = {"name": "development", "commit": old, "last_attempted_commit": old,
           "conditions": [ready]}  # fmt: skip
    answers = iter([(3.0, b"[]"), (0.0, json.dumps([env]).encode()), (3.0, b"[]"), (3.0, b"[]")])

    def in_turn(path: str) -> tuple[int, bytes]:
        delay, body = next(answers)
        time.sleep(delay)
        return 200, body

    with answering(in_turn) as url:
        for environments in ([("development", head, "waiting", old)], []):
            result = cli(
                "status", "--server", url, "--wait", "--reconcile", "--timeout", "1s",
                "--repo", repo.path, "--format", "json",
            )  # fmt: skip
            said = late(url)
            assert result.code == 1 and result.err.startswith(f"error: {said}\n"), result.err
            report = json.loads(result.out)
            assert (report["result"], report["unreachable"]) == ("timed_out", said), report
            assert report["seconds"] >= 1, report
            assert [
                (e["name"], e["commit"], e["state"], e["serving"]) for e in report["environments"]
            ] == environments, report


def test_status_wait_on_the_branch_layout_waits_for_each_environments_branch(
    tmp_path: Path, cli: Cli, start: Start, age_key: AgeKey, greeter_file: bytes
) -> None:
    pipe = Pipeline.create(tmp_path, "branches", cli, age_key, greeter_file)
    daemon = start(pipe, "--interval", "1s")
    assert pipe.run("promote", "hello", "--to", "staging", "--activate").code == 0
    wait = ("status", "--server", daemon.url, "--wait", "--repo", pipe.path, "--format", "json")
    result = cli(*wait, "--timeout", "30s")
    assert result.code == 0, result.err
    waited = json.loads(result.out)["environments"]
    assert [(e["name"], e["serving"], e["commit"]) for e in waited] == [
        (env, pipe.tip(env), pipe.tip(env)) for env in ENVS
    ]
    assert len({e["commit"] for e in waited}) == 3


def test_executions_server_reads_a_daemons_history(
    repo: Repo, start: Start, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`executions --server` and `executions show --server` read the daemon's history
    through its API, page by page, with a token from a file or $LOOMGIT_API_TOKEN."""
    from loomgit import live

    put_everywhere(repo, HELLO, {"staging": True})
    daemon = start(repo, state=tmp_path / "daemon-state")
    ids = []
    for name in ("Ann", "Bob", "Cy", "Di", "Ed"):
        code, body = daemon.request("POST", "/hooks/staging/hello", {"name": name})
        assert code == 202, body
        ids.append(daemon.finished(body["execution"])["id"])
    token_file = tmp_path / "api.token"
    token_file.write_text(f"# the daemon's token\n\n{TOKEN}\n")
    remote = ("--server", daemon.url, "--token-file", str(token_file))
    monkeypatch.setattr(live, "PAGE", 2)  # five executions, three requests
    result = cli("executions", *remote, "--format", "json")
    assert result.code == 0, result.err
    assert [ex["id"] for ex in json.loads(result.out)] == ids[::-1]
    assert json.loads(result.out)[0] == {
        k: v for k, v in daemon.finished(ids[-1]).items() if k != "steps"
    }
    result = cli("executions", *remote, "--limit", "3", "--format", "json")
    assert [ex["id"] for ex in json.loads(result.out)] == ids[:1:-1]
    result = cli("executions", *remote, "--env", "staging", "--before", ids[1])
    assert result.code == 0 and ids[0] in result.out and ids[1] not in result.out
    assert "staging  hello" in result.out and "v1" in result.out and "✓ succeeded" in result.out
    took = daemon.finished(ids[0])["duration_ms"]
    assert f"{took:.1f} ms" in result.out  # the daemon's figure, not one from rounded times
    # The local history (this test's own state folder) holds none of them.
    assert ids[0] not in cli("executions").out + cli("executions").err
    monkeypatch.setenv("LOOMGIT_API_TOKEN", TOKEN)
    result = cli("executions", "show", ids[2], "--server", daemon.url)
    assert result.code == 0, result.err
    assert f"execution {ids[2]}" in result.out and "hello v1 in staging" in result.out
    assert "✓ greet (set) succeeded" in result.out and '"name": "Cy"' in result.out
    assert f"started:     {daemon.finished(ids[2])['started_at']}" in result.out
    result = cli("executions", "--server", daemon.url, "show", ids[2], "--format", "json")
    assert json.loads(result.out) == daemon.finished(ids[2])
    # What goes wrong: one line each, exit 2.
    result = cli("executions", "--server", daemon.url, "--env", "stagin")
    assert result.code == 2 and "answered 400: unknown environment 'stagin'" in result.err
    assert "did you mean staging?" in result.err
    # A workflow no environment serves, with nothing recorded: most often a typo, as locally.
    result = cli("executions", "--server", daemon.url, "--workflow", "helo")
    assert result.code == 0 and result.err.splitlines() == [
        "no executions match",
        f"hint: no environment of the daemon at {daemon.url} serves --workflow helo; "
        "did you mean hello?",
    ], result.err
    result = cli("executions", "--server", daemon.url, "--workflow", "zzz", "--env", "staging")
    assert result.err.splitlines()[1] == (
        f"hint: no environment of the daemon at {daemon.url} serves --workflow zzz; it serves hello"
    ), result.err
    result = cli("executions", "--server", daemon.url, "--workflow", "hello", "--status", "failed")
    assert result.code == 0 and result.err == "no executions match\n"  # served: no hint
    result = cli("executions", "--server", daemon.url, "--workflow", "helo", "--format", "json")
    assert (result.code, result.out.strip(), result.err) == (0, "[]", "")
    result = cli("executions", "show", "0000000000", "--server", daemon.url)
    assert result.code == 2 and "answered 404: no execution 0000000000" in result.err
    monkeypatch.delenv("LOOMGIT_API_TOKEN")
    result = cli("executions", "--server", daemon.url)
    assert result.code == 2 and "answered 401: a valid bearer token is required" in result.err
    assert "hint: pass --token-file with one of the daemon's API tokens" in result.err
    monkeypatch.setenv("LOOMGIT_API_TOKEN", "not-the-daemons-token-at-all")
    result = cli("executions", "show", ids[0], "--server", daemon.url)
    assert result.code == 2 and "answered 401: a valid bearer token is required" in result.err
    assert result.err.splitlines()[1] == (
        "hint: the token sent (from --token-file, else $LOOMGIT_API_TOKEN) is not one of the "
        "daemon's (its --api-token-file, else $LOOMGIT_API_TOKENS)"
    )
    assert "not-the-daemons-token" not in result.err
    monkeypatch.delenv("LOOMGIT_API_TOKEN")
    token_file.write_text("# no token here\n")
    result = cli("executions", *remote)
    assert result.code == 2 and "holds no token (only blank or # lines)" in result.err
    for args, said in (
        (("--token-file", str(token_file)), "--token-file goes with --server"),
        (("--server", daemon.url, "--state-dir", str(tmp_path)), "not both"),
        (("--server", daemon.url, "prune", "--keep", "1"), "prune deletes from the local"),
        (("--server", "ftp://x"), "give an http:// or https:// URL"),
        (("--server", daemon.url, "--token-file", str(tmp_path / "nope")), "cannot read it"),
    ):
        result = cli("executions", *args)
        assert result.code == 2 and said in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert TOKEN not in daemon.stop()


def test_executions_server_refuses_answers_that_are_no_executions(cli: Cli) -> None:
    """A server answering JSON of another shape: one line, exit 2, never a traceback."""
    answers = iter(
        [
            b'{"executions": []}',
            b'[{"nope": 1}]',
            b'[{"id": "01X", "started_at": "yesterday"}]',
            b'{"id": "01X", "started_at": "yesterday"}',
            b"[1, 2]",
            b'{"since": "x", "versions": [{"environment": "a", "workflow": "b"}]}',
            b'{"since": "x", "versions": [' + _TALLY.replace(b'"p50": 1', b'"p50": []') + b"]}",
            b'{"since": "x", "versions": [' + _TALLY.replace(b'"count": 2', b'"n": 2') + b"]}",
        ]
    )
    with answering(lambda _: (200, next(answers))) as url:
        said = [
            cli("executions", "--server", url),
            cli("executions", "--server", url),
            cli("executions", "--server", url),
            cli("executions", "show", "01X", "--server", url),
            cli("executions", "show", "01X", "--server", url),
            *(cli("executions", "summary", "--server", url) for _ in range(3)),
        ]
    for result in said:
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert len(result.err.strip().splitlines()) <= 2, result.err
    assert "/api/v1/executions did not answer executions" in said[0].err
    assert "/api/v1/executions did not answer executions" in said[1].err
    assert "answered an execution loomgit cannot read" in said[2].err
    assert "answered an execution loomgit cannot read" in said[3].err
    assert "/api/v1/executions/01X did not answer an execution" in said[4].err
    for result in said[5:]:
        assert "/api/v1/executions/summary did not answer a summary" in result.err


def test_an_older_daemon_is_named_as_such(cli: Cli) -> None:
    """A daemon older than `--version` ignores `?version=`, as any parameter it does not
    know, and answers other versions: refused, never shown or judged as that version's
    (a gate would otherwise pass or fail on the version before). One older than the
    summary answers it 404: the hint says to upgrade it."""
    asked: list[str] = []
    row = {
        "id": "01M8324WHJKR6FDNASTSBMJ2CW",
        "environment": "production",
        "workflow": "b",
        "version": 1,
        "trigger": {"type": "webhook"},
        "status": "failed",
        "started_at": "2026-11-23T02:00:50.000Z",
    }

    def older(path: str) -> tuple[int, bytes]:
        asked.append(path)
        if not path.startswith("/api/v1/executions/summary"):
            return 200, json.dumps([row]).encode()
        if len(asked) > 3:
            return 404, b'{"detail": "Not Found"}'
        return 200, b'{"since": "x", "versions": [' + _TALLY + b"]}"

    gate = ("--max-failure-rate", "5%")
    with answering(older) as url:
        said = [
            cli("executions", "--server", url, "--workflow", "b", "--version", "2"),
            cli("executions", "summary", "--server", url, "--workflow", "b", "--version", "v2"),
            cli(
                "executions", "summary", "--server", url, "--workflow", "b", "--version", "2", *gate
            ),
            cli("executions", "summary", "--server", url),
        ]
        # Asked for the version it holds, the same answer is that version's: shown.
        same = cli("executions", "--server", url, "--workflow", "b", "--version", "1")
    assert "version=2" in asked[0] and "version=2" in asked[1], asked
    for result in said[:3]:
        assert result.code == 2 and result.out == "", result
        assert "answered other versions than v2" in result.err, result.err
        assert "does not filter by version: upgrade it" in result.err
        assert "failed more often" not in result.err
    assert said[3].code == 2 and "Traceback" not in said[3].err
    assert "has no summary: upgrade it" in said[3].err, said[3].err
    assert same.code == 0 and "01M8324WHJKR6FDNASTSBMJ2CW" in same.out, same


# One version of a summary as the daemon answers it (to be spoilt by the test above).
_TALLY = (
    b'{"environment": "a", "workflow": "b", "version": 1, "executions": 2,'
    b' "statuses": {"failed": 2}, "failure_rate": 1.0, "duration_ms": {"p50": 1, "p95": 1},'
    b' "last_started_at": null, "errors": [{"error": "e", "count": 2}]}'
)


def test_status_server_refuses_what_is_no_url_and_what_answers_no_http(cli: Cli) -> None:
    """A URL with a space or a control character, and a server answering something other
    than HTTP: one-line errors, exit 2 (both were tracebacks, exit 3)."""
    for bad in ("http://127.0.0.1:9/a b", "http://127.0.0.1:9/\x01"):
        result = cli("status", "--server", bad)
        assert result.code == 2 and "not a valid URL" in result.err, result.err
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        result = cli("status", "--server", f"http://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert result.code == 2 and "did not answer JSON; is it a loomgit daemon?" in result.err


def test_the_banner_lists_the_first_triggers_of_each_kind_and_counts_the_rest() -> None:
    from types import SimpleNamespace

    from loomgit.cli_serve import BANNER_LINES, banner
    from loomgit.reconcile import EnvStatus, Served

    hooks = {("POST", f"hooks/wf-{i:03d}"): f"wf-{i:03d}" for i in range(BANNER_LINES + 5)}
    served = Served("c" * 40, {}, frozenset(hooks.values()), {}, hooks, frozenset(), ())
    st = EnvStatus("staging")
    st.set_ready(True, "Ready", "serving 25 active workflows", 0.0)
    view = SimpleNamespace(names=["staging"], status={"staging": st}, served={"staging": served})
    lines = banner(view, "http://127.0.0.1:1")  # type: ignore[arg-type]
    assert lines[:3] == [
        "listening on http://127.0.0.1:1",
        "staging: Ready: serving 25 active workflows",
        "  POST http://127.0.0.1:1/hooks/staging/hooks/wf-000  -> wf-000",
    ]
    assert len(lines) == 2 + BANNER_LINES + 1
    assert lines[-1] == "  … and 5 more: GET http://127.0.0.1:1/api/v1/environments"


def test_the_banner_says_when_each_schedule_fires_next() -> None:
    from types import SimpleNamespace

    from loomgit.cli_serve import banner
    from loomgit.models import ScheduleTrigger
    from loomgit.reconcile import EnvStatus, Served

    daily = ScheduleTrigger(type="schedule", cron="30 6 * * *", timezone="Europe/Berlin")
    served = Served("c" * 40, {}, frozenset({"report"}), {}, {}, frozenset(), (("report", daily),))
    st = EnvStatus("production")
    st.set_ready(True, "Ready", "serving 1 active workflow", 0.0)
    view = SimpleNamespace(
        names=["production"], status={"production": st}, served={"production": served}
    )
    line = banner(view, "http://127.0.0.1:1")[-1]  # type: ignore[arg-type]
    found = re.fullmatch(
        r"  schedule '30 6 \* \* \*' \(Europe/Berlin\), next (\S+)  -> report", line
    )
    assert found, line
    fires = datetime.fromisoformat(found[1])
    assert (fires.hour, fires.minute) == (6, 30) and fires.utcoffset() in (
        timedelta(hours=1),
        timedelta(hours=2),
    )
    assert timedelta(0) < fires - datetime.now(UTC) <= timedelta(days=1)


def test_the_event_loop_is_uvloops_where_it_is_installed() -> None:
    import asyncio

    from loomgit import eventloop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    expected = "asyncio" if sys.platform == "win32" else "uvloop"
    assert eventloop.run(loop_module()).split(".")[0] == expected


def test_the_history_writer_process_imports_only_the_history() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, loomgit.writer; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "loomgit.history" in loaded
    heavy = {"loomgit.runtime", "loomgit.dispatch", "aiohttp", "pydantic", "jinja2"}
    assert heavy.isdisjoint(loaded)


def test_the_environments_view_lets_the_event_loop_turn_while_it_describes() -> None:
    """10,000 workflows described in one piece held every webhook for 20-25 ms per
    request: they are described in chunks, once per commit served."""
    import asyncio
    import weakref
    from types import SimpleNamespace

    from loomgit.reconcile import EnvStatus
    from loomgit.server import DESCRIBE_CHUNK, EnvironmentsView

    class Served(SimpleNamespace):
        pass  # one the view can refer to weakly, as to the real one

    count = 2 * DESCRIBE_CHUNK + 1
    deployments = {f"wf-{i:05d}": SimpleNamespace(version=i % 7 or None) for i in range(count)}
    served = Served(commit="c0ffee", deployments=deployments, active={"wf-00003"})
    reconciler = SimpleNamespace(
        names=["staging", "production"],
        status={"staging": EnvStatus("staging")},
        served={"staging": served},
    )
    view = EnvironmentsView(SimpleNamespace(reconciler=reconciler))

    async def render_while_counting_turns() -> tuple[bytes, int]:
        turns = 0
        rendering = asyncio.ensure_future(view.render())
        while not rendering.done():
            turns += 1
            await asyncio.sleep(0)
        response = await rendering
        assert response.body is not None
        return bytes(response.body), turns

    body, turns = asyncio.run(render_while_counting_turns())
    assert turns >= 3  # one per chunk, at least
    staging, production = json.loads(body)
    assert staging["name"] == "staging" and staging["commit"] == "c0ffee"
    assert list(staging["workflows"]) == sorted(deployments)
    assert staging["workflows"]["wf-00003"] == {"version": 3, "active": True}
    assert staging["workflows"]["wf-00007"] == {"version": None, "active": False}
    assert production == {
        "name": "production",
        "commit": None,
        "last_applied_commit": None,
        "last_attempted_commit": None,
        "conditions": [],
        "events": [],
        "workflows": {},
    }
    again, turns = asyncio.run(render_while_counting_turns())
    assert again == body and turns <= 1  # described once per commit served
    gone = weakref.ref(served)
    reconciler.served = {}  # as when a commit is swapped in: the old one is not kept
    del served
    assert gone() is None


def test_status_server_reads_an_older_daemons_unix_time_as_no_time() -> None:
    from loomgit import live

    env = {"name": "staging", "last_attempted_commit": "a" * 40}
    cond = {"status": "False", "reason": "FetchFailed", "message": "unreachable"}
    old = live._why({**env, "conditions": [{**cond, "last_transition": 1795333371.14}]})
    new = live._why({**env, "conditions": [{**cond, "last_transition": "2026-11-22T08:04:42.1Z"}]})
    assert old[-1] == f" at {'a' * 12}: unreachable"
    assert new[-1] == f" at {'a' * 12} since 2026-11-22 08:04:42 UTC: unreachable"

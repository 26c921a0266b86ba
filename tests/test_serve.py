"""End to end: the real daemon on a free port against a real repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO, AgeKey, Repo, Result, commit_all, git, promoted, state_yaml

Cli = Callable[..., Result]
TOKEN = "test-token-1234"
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

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, _json_or_text(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json_or_text(exc.read())

    def reconcile(self) -> dict[str, dict[str, Any]]:
        code, body = self.request(
            "POST", "/api/v1/reconcile", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert code == 200, body
        return {e["name"]: e for e in body}

    def finished(self, ident: str) -> dict[str, Any]:
        for _ in range(200):
            code, ex = self.request("GET", f"/api/v1/executions/{ident}")
            if code == 200 and ex["status"] not in ("queued", "running"):
                return ex  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"execution {ident} did not finish")

    def executions(self, **query: str) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        code, body = self.request("GET", f"/api/v1/executions?{qs}")
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
        repo: Repo, *extra: str, state: Path | None = None, env: dict[str, str] | None = None
    ) -> Daemon:
        keys = [a for env in ("development", "staging", "production")
                for a in ("--age-key-file", f"{env}={age_key.path}")]  # fmt: skip
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
    daemon = start(repo)
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Ada"})
    assert code == 202 and body["environment"] == "staging"
    ex = daemon.finished(body["execution"])
    assert ex["status"] == "succeeded" and ex["version"] == 1
    assert ex["steps"][1]["logs"][0]["message"] == "Hello, Ada"
    for path in ("/hooks/production/hello", "/hooks/development/hello", "/hooks/staging/nope"):
        assert daemon.request("POST", path, {})[0] == 404
    assert daemon.request("POST", "/hooks/qa/hello", {})[0] == 404
    assert daemon.request("GET", "/hooks/staging/hello")[0] == 404  # wrong method

    assert cli("deactivate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon.reconcile()
    assert daemon.request("POST", "/hooks/staging/hello", {"name": "Bo"})[0] == 404


def test_a_bad_commit_leaves_the_last_good_state_running(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    envs = daemon.reconcile()
    good = envs["staging"]["last_applied_commit"]
    repo.write(repo.wf("staging"), HELLO.replace("steps:", "steps: [oops"))
    bad = commit_all(repo.path, "hand edit")
    envs = daemon.reconcile()
    staging = envs["staging"]
    assert staging["last_attempted_commit"] == bad
    assert staging["last_applied_commit"] == good
    assert staging["conditions"][0]["reason"] == "ValidationFailed"
    assert "staging/workflows/hello.yaml" in staging["conditions"][0]["message"]
    code, body = daemon.request("POST", "/hooks/staging/hello", {"name": "Cy"})
    assert code == 202
    assert daemon.finished(body["execution"])["status"] == "succeeded"
    git(repo.path, "reset", "-q", "--hard", good)  # back to what runs: Ready again
    staging = daemon.reconcile()["staging"]
    assert staging["conditions"][0]["reason"] == "Ready"
    assert staging["last_attempted_commit"] == good


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
    assert "integrity check" in envs["production"]["conditions"][0]["message"]
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
    code, body = daemon.request("POST", path, {"input": {"name": "Ed"}}, headers=auth)
    assert code == 202 and body["environment"] == "production"
    ex = daemon.finished(body["execution"])
    assert ex["environment"] == "production" and ex["trigger"]["type"] == "api"
    code, body = daemon.request(
        "POST", path, {"environment": "staging", "input": {"name": "Fa"}}, headers=auth
    )
    assert code == 202 and body["environment"] == "staging"
    code, body = daemon.request("POST", path, {"environment": "development"}, headers=auth)
    assert code == 404  # not active in development


def test_idempotency_key_returns_the_first_execution(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    key = {"Idempotency-Key": "delivery-42"}
    first = daemon.request("POST", "/hooks/staging/hello", {"name": "Gu"}, headers=key)
    again = daemon.request("POST", "/hooks/staging/hello", {"name": "Gu"}, headers=key)
    assert first[0] == 202 and again[0] == 200
    assert again[1]["execution"] == first[1]["execution"]


def test_body_limit_and_sigterm(repo: Repo, cli: Cli, start: Any) -> None:
    assert cli("activate", "hello", "--env", "staging", "--repo", repo.path).code == 0
    daemon = start(repo)
    code, _ = daemon.request("POST", "/hooks/staging/hello", {"name": "x" * (1024 * 1024 + 10)})
    assert code == 413
    assert daemon.request("GET", "/healthz")[0] == 200
    err = daemon.stop()
    assert daemon.proc.returncode == 0, err
    assert "Traceback" not in err


def test_serve_refuses_bad_arguments(repo: Repo, cli: Cli) -> None:
    result = cli("serve", "--environments", "staging,qa", "--repo", repo.path)
    assert result.code == 2 and "unknown environment 'qa'" in result.err
    result = cli("serve", "--interval", "often", "--repo", repo.path)
    assert result.code == 2 and "'often' is not a duration" in result.err


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
    assert "Traceback" not in proc.stderr

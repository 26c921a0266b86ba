"""`loomgit run` (manual runs, first environment only) and `loomgit executions`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import HELLO, VARIABLES, AgeKey, Repo, Result
from echo_server import EchoServer, serve
from pyrage import x25519

from loomgit.ages import parse_since
from loomgit.cli_run import STATUSES
from loomgit.history import History, error_shape
from loomgit.records import STATUSES as STORED_STATUSES
from loomgit.records import Execution, Query, StepRecord, new_id

Cli = Callable[..., Result]
CANARY = "LOOMGIT-CANARY-greeter"  # the greeter token of the fixture repositories


@pytest.fixture
def server() -> Iterator[EchoServer]:
    yield from serve()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("LOOMGIT_STATE_DIR", str(folder))
    for env in ("DEVELOPMENT", "STAGING", "PRODUCTION"):
        monkeypatch.delenv(f"LOOMGIT_AGE_KEY_FILE_{env}", raising=False)
    return folder


def dev_key(age_key: AgeKey) -> str:
    return f"development={age_key.path}"


def test_run_uses_the_first_environment_and_records_it(
    repo: Repo, cli: Cli, age_key: AgeKey, state: Path
) -> None:
    repo.write("environments/development/variables.yaml", VARIABLES.replace("Hello", "Hi-dev"))
    result = cli(
        "run", "hello", "--input", '{"name": "Ada"}', "--age-key-file", dev_key(age_key),
        "--repo", repo.path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "running hello in development" in result.out
    assert "✓ greet" in result.out and "[info] Hi-dev, Ada" in result.out
    assert "succeeded in" in result.out
    listed = json.loads(cli("executions", "--format", "json").out)
    assert [(e["environment"], e["workflow"], e["status"]) for e in listed] == [
        ("development", "hello", "succeeded")
    ]
    assert listed[0]["trigger"]["type"] == "manual"
    assert listed[0]["trigger"]["body"] == {"name": "Ada"}
    assert listed[0]["id"] in result.out


def test_manual_runs_never_touch_later_environments(
    repo: Repo, cli: Cli, age_key: AgeKey, state: Path
) -> None:
    result = cli("run", "hello", "--env", "production", "--repo", repo.path)
    assert result.code == 2
    assert "manual runs always run in the first environment (development)" in result.err
    assert cli("executions", "--format", "json").out == "[]\n"


def test_run_needs_only_the_first_environments_key(repo: Repo, cli: Cli, state: Path) -> None:
    result = cli("run", "hello", "--repo", repo.path)
    assert result.code == 1
    assert "no age key for development" in result.err
    assert "LOOMGIT_AGE_KEY_FILE_DEVELOPMENT" in result.err


def test_keys_come_from_a_key_folder_too(
    repo: Repo,
    cli: Cli,
    age_key: AgeKey,
    state: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--age-key-dir` (or $LOOMGIT_AGE_KEY_DIR) holds ENV.agekey per environment, as the
    demo keys do; `--age-key-file` wins over it; a folder that is not there and an
    `--age-key-file` that is not ENV=PATH are said."""
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "development.agekey").write_bytes(age_key.path.read_bytes())
    (folder / "development.agekey").chmod(0o600)
    run = ("run", "hello", "--input", '{"name": "Di"}', "--repo", repo.path)
    result = cli(*run, "--age-key-dir", folder)
    assert result.code == 0, result.err
    assert "[info] Hello, Di" in result.out
    monkeypatch.setenv("LOOMGIT_AGE_KEY_DIR", str(folder))
    assert cli(*run).code == 0
    other = tmp_path / "other.agekey"  # a throwaway key the credentials are not for
    other.write_text(f"{x25519.Identity.generate()}\n")
    other.chmod(0o600)
    result = cli(*run, "--age-key-file", f"development={other}")
    assert result.code == 1 and "the age key given for development cannot decrypt" in result.err
    monkeypatch.delenv("LOOMGIT_AGE_KEY_DIR")
    result = cli(*run, "--age-key-dir", tmp_path / "nope")
    assert result.code == 2
    assert result.err == (
        f"error: the age key folder {tmp_path / 'nope'} (--age-key-dir or "
        "$LOOMGIT_AGE_KEY_DIR) does not exist\n"
    )
    result = cli(*run)
    assert result.code == 1 and "--age-key-dir DIR with development.agekey in it" in result.err
    for given in ("x", "development=", f"={other}"):
        result = cli(*run, "--age-key-file", given)
        wrong = f"error: --age-key-file takes ENV=PATH, not '{given}'\n"
        assert (result.code, result.err) == (2, wrong)


def test_a_workflow_without_credentials_needs_no_key(repo: Repo, cli: Cli, state: Path) -> None:
    repo.write(repo.wf("development"), HELLO.replace("  credentials: [greeter]\n", ""))
    result = cli("run", "hello", "--input", '{"name": "Bo"}', "--repo", repo.path)
    assert result.code == 0, result.err


def test_an_invalid_workflow_is_refused_and_nothing_recorded(
    repo: Repo, cli: Cli, age_key: AgeKey, state: Path
) -> None:
    repo.write(repo.wf("development"), HELLO.replace("vars.greeting", "vars.greting"))
    result = cli("run", "hello", "--age-key-file", dev_key(age_key), "--repo", repo.path)
    assert result.code == 1
    assert "hello does not validate:" in result.err and "greting" in result.err
    assert cli("executions", "--format", "json").out == "[]\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nope",),
            "there is no workflow 'nope' in development\nhint: workflows in development: hello",
        ),
        (("helo",), "there is no workflow 'helo' in development\nhint: did you mean hello?"),
        (("hello", "--input", "{bad"), "--input is not valid JSON"),
        (("hello", "--input-file", "missing.json"), "cannot read missing.json"),
        (("hello", "--timeout", "soon"), "'soon' is not a duration"),
        (("hello", "--input", '{"name": NaN}'), "--input is not valid JSON: NaN is not a JSON"),
        (("hello", "--input", "[" * 200 + "]" * 200), "--input is refused: it nests arrays"),
        (("hello", "--env", "qa"), "unknown environment 'qa'"),
    ],
)
def test_bad_arguments(
    repo: Repo, cli: Cli, state: Path, args: tuple[str, ...], message: str
) -> None:
    result = cli("run", *args, "--repo", repo.path)
    assert result.code == 2
    assert message in result.err


def test_a_failed_run_exits_1(repo: Repo, cli: Cli, age_key: AgeKey, state: Path) -> None:
    result = cli("run", "hello", "--age-key-file", dev_key(age_key), "--repo", repo.path)
    assert result.code == 1
    assert "✗ greet" in result.out
    failed = "error: step greet failed: with.text: trigger.body has no key 'name' (it is empty)"
    assert failed in result.err
    [listed] = json.loads(cli("executions", "--format", "json").out)
    assert listed["status"] == "failed"
    # The list says why, in the width the other columns leave.
    [_, row] = cli("executions").out.splitlines()
    assert row.split()[-12:] == failed.split()[1:]
    shown = cli("executions", "show", listed["id"][:10])
    assert shown.code == 0
    assert "stopped at:  greet" in shown.out


LEAKY = """\
apiVersion: loomgit/v1
kind: Workflow
metadata:
  name: leaky
spec:
  triggers: [{{type: manual}}]
  credentials: [greeter]
  steps:
    - id: call
      type: http
      with:
        url: "{url}/echo"
        headers: {{X-Token: "{{{{ credentials.greeter.token }}}}"}}
    - id: note
      type: log
      with: {{message: "the token is {{{{ credentials.greeter.token }}}}"}}
    - id: shout
      type: log
      with:
        message: >-
          {{{{ credentials.greeter.token | upper }}}} {{{{ credentials.greeter.token | lower }}}}
    - id: stop
      type: fail
      with: {{message: "{{{{ steps.call.output.json.headers }}}}"}}
"""


def test_the_canary_never_reaches_output_or_history(
    repo: Repo, cli: Cli, age_key: AgeKey, state: Path, server: EchoServer
) -> None:
    repo.write(repo.wf("development", "leaky"), LEAKY.format(url=server.url))
    outputs = []
    for fmt in ("text", "json"):
        result = cli(
            "run", "leaky", "--format", fmt, "--age-key-file", dev_key(age_key),
            "--repo", repo.path,
        )  # fmt: skip
        assert result.code == 1
        outputs += [result.out, result.err]
    assert server.hits["/echo"] == 2  # the real value was sent
    ident = json.loads(cli("executions", "--format", "json").out)[0]["id"]
    outputs.append(cli("executions", "show", ident).out)
    outputs.append(cli("executions", "show", ident, "--format", "json").out)
    joined = "\n".join(outputs)
    assert "[redacted]" in joined
    for form in (CANARY, CANARY.upper(), CANARY.lower()):
        assert form not in joined
        for path in state.glob("history.db*"):
            assert form.encode() not in path.read_bytes()


def _seed(history: History) -> list[Execution]:
    base = time.time() - 3600
    made = []
    for i in range(30):
        env = ("development", "staging", "production")[i % 3]
        status = "failed" if i % 4 == 0 else "succeeded"
        ex = Execution(
            id=new_id(base + i),
            environment=env,
            workflow="order-sync" if i % 2 else "nightly",
            trigger_type="webhook",
            status="running",
            started_at=base + i * 60,
            version=1,
        )
        history.start(ex)
        done = replace(
            ex,
            status=status,
            ended_at=ex.started_at + 1,
            steps=(StepRecord(0, "a", "set", status),),
        )
        history.finish(done)
        made.append(done)
    return made


def test_executions_filter_per_environment(cli: Cli, state: Path) -> None:
    with History() as history:
        made = _seed(history)

    def ids(*args: str) -> list[str]:
        result = cli("executions", *args, "--format", "json")
        assert result.code == 0, result.err
        return [e["id"] for e in json.loads(result.out)]

    staging = [e for e in made if e.environment == "staging"]
    assert ids("--env", "staging") == [e.id for e in reversed(staging)]
    failed = [e for e in made if e.environment == "production" and e.status == "failed"]
    assert ids("--env", "production", "--status", "failed") == [e.id for e in reversed(failed)]
    assert len(ids("--limit", "4")) == 4
    assert ids("--workflow", "nightly", "--env", "development") == [
        e.id for e in reversed(made) if e.workflow == "nightly" and e.environment == "development"
    ]
    recent = [e for e in made if e.started_at >= time.time() - 600]
    assert set(ids("--since", "10m")) == {e.id for e in recent}
    # Page by page: each page starts after the last id of the one before.
    every, paged, before = ids("--env", "staging"), [], []
    while page := ids("--env", "staging", "--limit", "3", *before):
        paged += page
        before = ["--before", page[-1]]
    assert paged == every and len(every) > 3
    # As `executions show`, a unique start of an id will do.
    assert ids("--env", "staging", "--before", every[0][:10]) == every[1:]
    table = cli("executions", "--env", "staging").out
    assert staging[-1].id in table and "staging" in table and "production" not in table


def test_a_filter_the_history_never_saw_is_told(cli: Cli, state: Path) -> None:
    """`--env prodution` matches nothing, as it should; the hint says why. A value the
    history never saw that is no typo, or an empty history, is most often a daemon keeping
    its history elsewhere: the hint says which history was read, and how to read a
    daemon's."""
    elsewhere = "a daemon's is read with --server URL, or with --state-dir set to its state folder"
    # Nothing recorded yet: read as empty, and nothing is made (a mistyped folder stays away).
    missing = cli("executions", "--env", "production")
    assert missing.code == 0 and missing.err.splitlines() == [
        "no executions match",
        f"hint: there is no execution history in {state} (no history.db): nothing has recorded"
        f" an execution there; {elsewhere}",
    ]
    assert cli("executions", "--format", "json").out.strip() == "[]"
    shown = cli("executions", "show", "01ABCDEF")
    assert shown.code == 2 and "there is no execution history in" in shown.err
    assert cli("executions", "prune", "--keep", "1").out == "deleted 0 executions\n"
    assert not state.exists()
    with History():
        pass
    empty = cli("executions", "--env", "production")
    assert empty.code == 0 and empty.err.splitlines() == [
        "no executions match",
        f"hint: the execution history in {state / 'history.db'} is empty; {elsewhere}",
    ]
    assert cli("executions").err.splitlines()[1:] == empty.err.splitlines()[1:]
    with History() as history:
        _seed(history)
        assert history.recorded("environment") == ["development", "production", "staging"]
        assert history.recorded("workflow") == ["nightly", "order-sync"]
    typo = cli("executions", "--env", "prodution")
    assert typo.code == 0 and typo.err == (
        "no executions match\n"
        "hint: no execution was ever recorded for --env prodution; did you mean production?\n"
    )
    short = cli("executions", "--env", "prod").err  # too short for difflib alone
    assert "--env prod; did you mean production?" in short
    other = cli("executions", "--workflow", "billing", "--env", "live").err.splitlines()
    assert other[1:] == [
        "hint: no execution was ever recorded for --env live;"
        " the history has development, production, staging",
        "hint: no execution was ever recorded for --workflow billing;"
        " the history has nightly, order-sync",
        f"hint: this is the history in {state / 'history.db'}; {elsewhere}",
    ]
    # The history is named once a value is no typo, not for a typo alone.
    mixed = cli("executions", "--env", "prodution", "--workflow", "billing").err
    assert mixed.count("hint: ") == 3 and "did you mean production?" in mixed
    # Known values that happen to match nothing together need no hint.
    assert cli("executions", "--env", "staging", "--since", "1s").err == "no executions match\n"
    assert cli("executions", "--env", "staging", "--format", "json").code == 0


def test_the_closest_name_is_a_near_typo_or_the_one_it_shortens() -> None:
    from loomgit.wording import closest

    names = ["development", "production", "staging"]
    assert closest("prodution", names) == "production"
    assert closest("prod", names) == "production"
    assert closest("dev", names) == "development"
    assert closest("p", names) is None, "one letter is too little to go on"
    assert closest("live", names) is None
    assert closest("ord", ["order-sync", "order-refund"]) is None, "two it could shorten"


def test_executions_show_and_errors(cli: Cli, state: Path) -> None:
    with History() as history:
        made = _seed(history)
    shown = cli("executions", "show", made[0].id)
    assert shown.code == 0 and "a (set) failed" in shown.out
    with History() as history:  # one still running: its steps come with its end
        running = replace(made[0], id=new_id(time.time()), status="running", steps=())
        history.start(running)
        # Its twin, started in the same millisecond, shares the first 10 characters of its
        # id (the time): `made[0]`'s first 6 match both, wherever the seed's times fell.
        history.start(replace(made[0], id=new_id(made[0].started_at), status="running"))
    shown = cli("executions", "show", running.id)
    assert shown.code == 0 and shown.out.endswith("steps:\n  (recorded when it ends)\n")
    assert cli("executions", "show", "ZZZZZZZZ").code == 2
    short = cli("executions", "show", made[0].id[:5])
    assert short.code == 2
    assert short.err == (
        f"error: '{made[0].id[:5]}' is too short to name an execution: give at least 6"
        " characters of its id\n"
    )
    assert "is not an execution id" in cli("executions", "show", "0-0").err
    assert "matches several" in cli("executions", "show", made[0].id[:6]).err
    assert cli("executions", "--since", "yesterday").code == 2
    gone = cli("executions", "--before", "0" * 26)
    assert gone.code == 2 and f"no execution {'0' * 26} to list" in gone.err
    assert "is not an execution id" in cli("executions", "--before", "x y").err
    assert "matches several" in cli("executions", "--before", made[0].id[:6]).err
    missing = cli("executions", "show", "0" * 26)
    assert missing.code == 2 and missing.err.endswith(f"hint: looked in {state}/history.db\n")


def test_show_and_prune_take_the_state_dir_after_the_subcommand(
    cli: Cli, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    with History(elsewhere / "history.db") as history:
        made = _seed(history)
    monkeypatch.delenv("LOOMGIT_STATE_DIR")
    shown = cli("executions", "show", made[0].id, "--state-dir", elsewhere)
    assert shown.code == 0 and made[0].id in shown.out
    grouped = cli("executions", "--state-dir", elsewhere, "show", made[0].id)
    assert grouped.out == shown.out
    pruned = cli("executions", "prune", "--keep", "5", "--state-dir", elsewhere)
    assert pruned.out == "deleted 15 executions\n"


def test_prune_by_count_and_age(cli: Cli, state: Path) -> None:
    with History() as history:
        _seed(history)
    assert cli("executions", "prune").code == 2
    assert cli("executions", "prune", "--keep", "5").out == "deleted 15 executions\n"
    remaining = json.loads(cli("executions", "--format", "json").out)
    assert len(remaining) == 15
    # The seeded executions started 60 to 31 minutes ago, one a minute.
    assert cli("executions", "prune", "--older-than", "40.5m").out == "deleted 5 executions\n"
    remaining = json.loads(cli("executions", "--format", "json").out)
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 40.5 * 60))
    assert len(remaining) == 10 and all(e["started_at"] >= cutoff for e in remaining)


def test_prune_dry_run_counts_and_deletes_nothing(cli: Cli, state: Path) -> None:
    with History() as history:
        _seed(history)
    dry = cli("executions", "prune", "--keep", "5", "--dry-run")
    assert dry.code == 0 and dry.out == "would delete 15 executions\n"
    listed = json.loads(cli("executions", "--format", "json").out)
    assert len(listed) == 30
    report = cli("executions", "prune", "--keep", "5", "--dry-run", "--format", "json")
    assert json.loads(report.out) == {
        "dry_run": True,
        "deleted": 15,
        "environments": {"development": 5, "production": 5, "staging": 5},
    }
    done = json.loads(cli("executions", "prune", "--keep", "5", "--format", "json").out)
    assert done == {**json.loads(report.out), "dry_run": False}
    again = json.loads(cli("executions", "prune", "--keep", "5", "--format", "json").out)
    assert again == {"dry_run": False, "deleted": 0, "environments": {}}


def test_a_subcommand_takes_the_listing_options_it_has_and_refuses_the_others(
    cli: Cli, state: Path
) -> None:
    """`executions --env production prune --keep 5` pruned every environment: the --env
    before `prune` was dropped without a word. Each subcommand now takes those of the
    listing's options it has, wherever they are given, and refuses the others."""
    with History() as history:
        made = _seed(history)
    dry = cli("executions", "--env", "production", "prune", "--keep", "5", "--dry-run")
    assert dry.out == "would delete 5 executions\n"
    for args in (
        ("--status", "failed", "prune", "--keep", "1"),
        ("--limit", "3", "prune", "--older-than", "1m"),
        ("--env", "production", "show", made[0].id),
        ("--workflow", "nightly", "show", made[0].id),
    ):
        refused = cli("executions", *args)
        flag, command = args[0], args[2]
        assert refused.code == 2 and refused.err.splitlines() == [
            f"error: `executions {command}` has no {flag}: given before `{command}`, it would"
            " be ignored",
            f"hint: see `loomgit executions {command} --help`",
        ], args
    twice = cli("executions", "--env", "staging", "prune", "--env", "production", "--keep", "1")
    assert twice.code == 2 and twice.err == (
        "error: --env is given twice: staging before `prune`, production after it\n"
    )
    assert len(json.loads(cli("executions", "--format", "json", "--limit", "100").out)) == 30
    shown = cli("executions", "--format", "json", "show", made[0].id)
    assert json.loads(shown.out)["id"] == made[0].id
    # prune --env: that environment's executions only; a typo is told.
    pruned = cli("executions", "prune", "--env", "staging", "--keep", "5", "--format", "json")
    assert json.loads(pruned.out) == {
        "dry_run": False,
        "deleted": 5,
        "environments": {"staging": 5},
    }
    typo = cli("executions", "prune", "--env", "prodution", "--keep", "1")
    assert typo.code == 0 and typo.out == "deleted 0 executions\n"
    assert (
        typo.err
        == "hint: no execution was ever recorded for --env prodution; did you mean production?\n"
    )
    assert len(json.loads(cli("executions", "--format", "json", "--limit", "100").out)) == 25


def _tallied(history: History) -> None:
    """order-sync in production: v1 ran 20 times (1 to 20 ms; 2 failed, 1 timed out), v2
    4 times (3 failed, 1 still running); in staging, v2 5 times, an hour ago."""
    now = time.time()
    runs: list[tuple[str, int, str, float, str | None, float]] = []
    for i in range(20):
        status, error = "succeeded", None
        if i in (3, 11):
            # Each names its order: counted as one error, the order shown as `…`.
            status, error = "failed", f"step charge failed: POST /orders/{1000 + i} answered 500"
        if i == 15:
            status, error = "timed_out", "no result within 2s"
        runs.append(("production", 1, status, i + 1.0, error, now - 600 + i))
    for _ in range(3):
        runs.append(
            ("production", 2, "failed", 5.0, "step amount failed: no key 'amount'", now - 60)
        )
    runs.append(("production", 2, "running", 0.0, None, now - 10))
    runs += [("staging", 2, "succeeded", 30.0, None, now - 3600 - i) for i in range(5)]
    for env, version, status, took, error, began in runs:
        ex = Execution(
            id=new_id(began),
            environment=env,
            workflow="order-sync",
            trigger_type="webhook",
            status="running",
            started_at=began,
            version=version,
        )
        history.start(ex)
        if status != "running":
            history.finish(replace(ex, status=status, ended_at=began + took / 1000, error=error))


def test_executions_summary_counts_each_version(cli: Cli, state: Path) -> None:
    """How each version fared since a time: counts by status, the failure rate of those
    that ended, p50 and p95 of how long they took, and the most frequent errors; with
    --max-failure-rate, a gate that exits 1 naming each version above it."""
    with History() as history:
        _tallied(history)
    result = cli("executions", "summary", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert parse_since(report["since"]) == pytest.approx(time.time() - 24 * 3600, abs=60)
    for tally in report["versions"]:
        tally.pop("last_started_at")
    assert report["versions"] == [
        {
            "environment": "production",
            "workflow": "order-sync",
            "version": 2,
            "executions": 4,
            "statuses": {"running": 1, "failed": 3},
            "failure_rate": 1.0,
            "duration_ms": {"p50": 5.0, "p95": 5.0},
            "errors": [{"error": "step amount failed: no key 'amount'", "count": 3}],
        },
        {
            "environment": "production",
            "workflow": "order-sync",
            "version": 1,
            "executions": 20,
            "statuses": {"succeeded": 17, "failed": 2, "timed_out": 1},
            "failure_rate": 0.15,
            # nearest rank: the 10th and the 19th of 1, 2 … 20 ms
            "duration_ms": {"p50": 10.0, "p95": 19.0},
            "errors": [
                {"error": "step charge failed: POST /orders/… answered 500", "count": 2},
                {"error": "no result within 2s", "count": 1},
            ],
        },
        {
            "environment": "staging",
            "workflow": "order-sync",
            "version": 2,
            "executions": 5,
            "statuses": {"succeeded": 5},
            "failure_rate": 0.0,
            "duration_ms": {"p50": 30.0, "p95": 30.0},
            "errors": [],
        },
    ]
    table = cli("executions", "summary").out.splitlines()
    assert table[0].startswith("executions started since ")
    assert [line.split()[:9] for line in table[2:5]] == [
        ["production", "order-sync", "v2", "4", "0", "3", "1", "running", "100.0%"],
        ["production", "order-sync", "v1", "20", "17", "3", "-", "15.0%", "10.0"],
        ["staging", "order-sync", "v2", "5", "5", "0", "-", "0.0%", "30.0"],
    ]
    assert table[6:] == [
        "the most frequent error of each that failed:",
        "  order-sync v2 in production, 3 times: step amount failed: no key 'amount'",
        "  order-sync v1 in production, 2 times: step charge failed: POST /orders/… answered 500",
    ]
    # Filters, as the listing's; given before `summary` too.
    recent = json.loads(cli("executions", "summary", "--since", "30m", "--format", "json").out)
    assert {t["environment"] for t in recent["versions"]} == {"production"}
    staged = cli("executions", "--env", "staging", "summary", "--since", "2h", "--format", "json")
    assert [t["version"] for t in json.loads(staged.out)["versions"]] == [2]
    none = cli("executions", "summary", "--workflow", "ordr-sync")
    assert none.code == 0 and none.err.splitlines()[1] == (
        "hint: no execution was ever recorded for --workflow ordr-sync; did you mean order-sync?"
    )
    # The gate: each version above the rate, of those with enough ended executions.
    gate = cli("executions", "summary", "--max-failure-rate", "10%")
    assert gate.code == 1 and gate.err.splitlines()[-1] == (
        "error: failed more often than --max-failure-rate 10%: order-sync v2 in production"
        " (100.0%: 3 of 3), order-sync v1 in production (15.0%: 3 of 20)"
    )
    least = cli("executions", "summary", "--max-failure-rate", "10", "--min-executions", "5")
    assert least.code == 1 and least.err.endswith(
        ": order-sync v1 in production (15.0%: 3 of 20)\n"
    )
    assert cli("executions", "summary", "--env", "staging", "--max-failure-rate", "0").code == 0
    # A gate that judged nothing passes, and says so.
    unjudged = cli("executions", "summary", "--max-failure-rate", "5", "--min-executions", "21")
    assert unjudged.code == 0 and unjudged.err == (
        "note: --max-failure-rate judged nothing: no version had 21 that ended\n"
    )
    quiet = cli("executions", "summary", "--since", "1s", "--max-failure-rate", "5")
    assert quiet.code == 0 and quiet.err.endswith(
        "note: --max-failure-rate judged nothing: no version had an execution that ended\n"
    )
    for bad in ("120", "-1", "five", "nan"):
        wrong = cli("executions", "summary", "--max-failure-rate", bad)
        assert wrong.code == 2 and "--max-failure-rate takes a percentage" in wrong.err, bad
    assert cli("executions", "summary", "--since", "soon").code == 2


@pytest.mark.parametrize(
    ("error", "shape"),
    [
        ("step push failed: POST answered 501", "step push failed: POST answered 501"),
        (
            'POST http://127.0.0.1:9099/orders/1001 answered 500: {"request_id": "req_8fJ3kQ2x"}',
            'POST http://127.0.0.1:…/orders/… answered 500: {"request_id": "…"}',
        ),
        (
            "step call-api-2 failed: no result within 30s",
            "step call-api-2 failed: no result within 30s",
        ),
        (
            "step fetch_v2 failed at 2026-11-23T03:47:14.123Z (+01:00: 2026-11-23)",
            "step fetch_v2 failed at … (+01:00: …)",
        ),
        (
            "id 550e8400-e29b-41d4-a716-446655440000, 01M838NZD9SMJ4HV6Z, 9cb084e2b693",
            "id …, …, …",
        ),
        ("sku A-1, lines[3], 12.50 EUR, -1234, 123", "sku A-1, lines[3], 12.50 EUR, …, 123"),
    ],
)
def test_errors_that_differ_in_ids_times_and_numbers_count_as_one(error: str, shape: str) -> None:
    assert error_shape(error) == shape


def test_executions_and_the_summary_filter_by_version(cli: Cli, state: Path) -> None:
    """--version (3 or v3, with --workflow): the listing and the summary of that version
    only, so a gate after a promotion judges the new version and not the one before."""
    with History() as history:
        _tallied(history)
    listed = cli("executions", "--workflow", "order-sync", "--version", "v2", "--format", "json")
    rows = json.loads(listed.out)
    assert [(r["environment"], r["version"], r["status"]) for r in rows] == [
        ("production", 2, "running"),
        *[("production", 2, "failed")] * 3,
        *[("staging", 2, "succeeded")] * 5,
    ]
    failed = cli("executions", "--env", "production", "--workflow", "order-sync", "--version", "1")
    assert len(failed.out.splitlines()) == 21 and " v2 " not in failed.out
    report = cli(
        "executions", "summary", "--workflow", "order-sync", "--version", "1", "--format", "json"
    )
    assert [(t["environment"], t["version"]) for t in json.loads(report.out)["versions"]] == [
        ("production", 1)
    ]
    # Given before `summary` as well; the gate judges that version only.
    gate = ("--max-failure-rate", "20%")
    assert cli("executions", "summary", "--max-failure-rate", "20%").code == 1  # v2: 100%
    old = cli("executions", "--workflow", "order-sync", "--version", "1", "summary", *gate)
    assert old.code == 0, old.err
    new = cli("executions", "summary", "--workflow", "order-sync", "--version", "2", *gate)
    assert new.code == 1 and new.err.splitlines()[-1] == (
        "error: failed more often than --max-failure-rate 20%: order-sync v2 in production"
        " (100.0%: 3 of 3)"
    )
    # A version never recorded: nothing, and the versions there are.
    for args in (
        ("executions", "--workflow", "order-sync", "--version", "3"),
        ("executions", "summary", "--workflow", "order-sync", "--version", "3"),
    ):
        none = cli(*args)
        assert none.code == 0 and none.out == "", none
        assert none.err.splitlines()[-1] == (
            "hint: no execution of order-sync v3 was ever recorded; it has v2, v1"
        )
    staged = cli("executions", "--env", "staging", "--workflow", "order-sync", "--version", "1")
    assert staged.err.splitlines()[-1] == (
        "hint: no execution of order-sync v1 was ever recorded in staging; it has v2"
    )
    # Refused: without --workflow, not a version, given twice differently, for `show`.
    for args, said in (
        (("executions", "--version", "2"), "error: --version goes with --workflow"),
        (("executions", "summary", "--version", "2"), "error: --version goes with --workflow"),
        (("executions", "--workflow", "order-sync", "--version", "2.0"), "is not a version"),
        (("executions", "--workflow", "order-sync", "--version", "0"), "is not a version"),
        (
            ("executions", "--version", "1", "summary", "--workflow", "x", "--version", "2"),
            "error: --version is given twice: 1 before `summary`, 2 after it",
        ),
        (("executions", "--version", "1", "show", "01X"), "`executions show` has no --version"),
        (("executions", "--version", "1", "prune", "--keep", "1"), "`executions prune` has no"),
    ):
        result = cli(*args)
        assert result.code == 2 and said in result.err, (args, result.err)
    with History() as history:  # nothing was pruned
        assert len(history.query(Query(limit=100))) == 29


def test_an_unusable_state_folder_is_a_clear_error(repo: Repo, cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("run", "hello", "--repo", repo.path, "--state-dir", blocker / "state")
    assert result.code == 1
    assert "cannot create the state folder" in result.err
    read = cli("executions", "--state-dir", blocker / "state")  # a read makes nothing
    assert read.code == 0 and "there is no execution history in" in read.err


def test_status_names_match_the_store() -> None:
    assert list(STORED_STATUSES) == STATUSES


def test_since_takes_ages_and_dates() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("2026-01-01") == parse_since("2026-01-01T00:00:00Z")


SLOW = """\
apiVersion: loomgit/v1
kind: Workflow
metadata:
  name: slow
spec:
  triggers: [{{type: manual}}]
  steps:
    - id: wait
      type: http
      with: {{url: "{url}/slow/5"}}
"""


def test_ctrl_c_records_the_run_as_cancelled(
    repo: Repo, cli: Cli, state: Path, server: EchoServer
) -> None:
    repo.write(repo.wf("development", "slow"), SLOW.format(url=server.url))
    proc = subprocess.Popen(
        [sys.executable, "-m", "loomgit", "run", "slow", "--repo", str(repo.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOOMGIT_STATE_DIR": str(state)},
        # A job started in the background inherits SIGINT ignored; a terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert "running slow in development" in proc.stdout.readline()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    [listed] = json.loads(cli("executions", "--format", "json").out)
    assert listed["status"] == "cancelled" and listed["stopped_at"] == "wait"


def test_record_limit_keeps_a_preview(repo: Repo, cli: Cli, age_key: AgeKey, state: Path) -> None:
    body = json.dumps({"name": "x" * 5000})
    result = cli(
        "run", "hello", "--input", body, "--record-limit", "1024",
        "--age-key-file", dev_key(age_key), "--repo", repo.path,
    )  # fmt: skip
    assert result.code == 0, result.err
    ident = json.loads(cli("executions", "--format", "json").out)[0]["id"]
    shown = json.loads(cli("executions", "show", ident, "--format", "json").out)
    greet = shown["steps"][0]
    assert greet["output"]["truncated"] is True and greet["output"]["bytes"] > 5000

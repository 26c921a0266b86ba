"""Step types: built-in parameter models, and plugin types from the `loomgit.steps`
entry point group, whose parameters validate checks too."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Repo, Result, install_steps

from loomgit.models import steps

PLUGIN = """
from pydantic import BaseModel, ConfigDict

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str

class SlackStep:
    params = Params

    @staticmethod
    async def run(params, ctx):
        ctx.log(f"posting to #{params.channel}")
        return {"posted": params.channel, "env": ctx.environment}
"""


def _clear() -> None:
    from loomgit import steps as kinds

    steps._registered.cache_clear()
    kinds.kind.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    """A package that registers a `slack` step."""
    site = tmp_path / "site"
    install_steps(site, "loomgit_slack_test", PLUGIN, {"slack": "loomgit_slack_test:SlackStep"})
    sys.path.insert(0, str(site))
    _clear()
    yield
    sys.path.remove(str(site))
    sys.modules.pop("loomgit_slack_test", None)
    _clear()


def test_a_step_type_installed_after_the_lookup_is_found(tmp_path: Path) -> None:
    """A process that read the registry before a package was installed (a runner of a
    running daemon) finds the package's type at its first use, without a restart."""
    from loomgit import steps as kinds

    site = tmp_path / "site"
    site.mkdir()
    sys.path.insert(0, str(site))
    _clear()
    try:
        assert "slack" not in steps.plugins()  # read, and remembered
        assert not steps.plugins_changed()
        with pytest.raises(kinds.StepError, match="unknown step type 'hush'"):
            kinds.kind("hush")
        install_steps(site, "loomgit_late_test", PLUGIN, {"slack": "loomgit_late_test:SlackStep"})
        assert kinds.kind("slack").plugin
        assert "slack" in steps.plugins() and not steps.plugins_changed()
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("loomgit_late_test", None)
        _clear()


def _with_slack(channel_key: str) -> str:
    return HELLO.replace(
        "      type: log\n      with:\n        message:",
        f"      type: slack\n      with:\n        {channel_key}: ops\n        unused:",
    )


def test_plugin_step_type_is_known(plugin: None, repo: Repo, cli: Callable[..., Result]) -> None:
    assert "slack" in steps.known_types()
    repo.write(
        repo.wf("development"),
        _with_slack("channel").replace('        unused: "{{ steps.greet.output.text }}"\n', ""),
    )
    result = cli("validate", "--repo", repo.path, "--env", "development")
    assert result.code == 0, result.out


def test_plugin_parameters_are_validated(
    plugin: None, repo: Repo, cli: Callable[..., Result]
) -> None:
    repo.write(repo.wf("development"), _with_slack("chanel"))
    result = cli("validate", "--repo", repo.path, "--env", "development")
    assert result.code == 1
    assert "error[LG322]: unknown key 'chanel'" in result.out
    assert "did you mean 'channel'" in result.out


def test_without_the_plugin_the_type_is_unknown(repo: Repo, cli: Callable[..., Result]) -> None:
    repo.write(repo.wf("development"), _with_slack("channel"))
    assert "error[LG321]: unknown step type 'slack'" in cli("validate", "--repo", repo.path).out


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        ({"url": "https://x", "json": {"a": 1}}, True),
        ({"url": "https://x", "json": {}, "body": "x"}, False),
        ({"method": "FETCH", "url": "https://x"}, False),
        ({"url": "https://x", "timeout": "2m", "expect_status": [201]}, True),
        ({"url": "https://x", "expect_status": [999]}, False),
    ],
)
def test_http_parameters(params: dict[str, object], ok: bool) -> None:
    from pydantic import ValidationError

    try:
        steps.HttpParams.model_validate(params)
    except ValidationError:
        assert not ok
    else:
        assert ok


def test_plugin_step_runs(
    plugin: None, repo: Repo, cli: Callable[..., Result], tmp_path: Path, age_key: AgeKey
) -> None:
    repo.write(
        repo.wf("development"),
        _with_slack("channel").replace('        unused: "{{ steps.greet.output.text }}"\n', ""),
    )
    result = cli(
        "run", "hello", "--input", '{"name": "Ada"}', "--state-dir", tmp_path / "state",
        "--age-key-file", f"development={age_key.path}", "--repo", repo.path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "[info] posting to #ops" in result.out
    assert '"posted": "ops"' in result.out and '"env": "development"' in result.out


def test_a_parameter_refused_at_run_time_names_the_rule_not_the_value() -> None:
    """Parameters are checked again once their templates are rendered; the value may
    have come from a credential, so the error states the rule without it."""
    from loomgit import steps as kinds

    with pytest.raises(kinds.StepError) as refused:
        kinds.kind("http").parse({"url": "https://x", "method": "s3cr3t", "timeout": "1x"})
    message = str(refused.value)
    assert "with.method: must be 'GET', 'POST'" in message
    assert "with.timeout: " in message
    assert "s3cr3t" not in message and "Input should" not in message
    with pytest.raises(kinds.StepError) as refused:
        kinds.kind("set").parse({"2x": 1})
    assert "must be letters, digits and '_'" in str(refused.value), refused.value


@pytest.mark.parametrize(
    ("kind", "msg", "given", "told"),
    [
        ("int_parsing", "Input should be a valid integer, unable to parse string as an integer",
         "x", "'x' must be an integer"),
        ("string_type", "Input should be a valid string", [1], "must be a string, not a list"),
        ("dict_type", "Input should be a valid dictionary", 5, "5 must be a mapping"),
        ("greater_than_equal", "Input should be greater than or equal to 1", 0,
         "0 must be at least 1"),
        ("too_short", "List should have at least 1 item after validation, not 0", [],
         "must have at least 1 item, not 0"),
        ("value_error", "Value error, something else", "x", "Value error, something else"),
    ],
)  # fmt: skip
def test_pydantic_messages_are_told_as_rules(kind: str, msg: str, given: object, told: str) -> None:
    from loomgit.wording import must

    assert must(kind, msg, given) == told


ODD_PLUGINS = """
import datetime
import threading
from types import SimpleNamespace
from pydantic import BaseModel

released = threading.Event()

class Loose(BaseModel):  # pydantic's default: unknown keys are dropped
    text: str
    max_length: int = 40

def _stamp(params, ctx):
    return {"text": params.text[: params.max_length], "tags": {"a"},
            "at": datetime.datetime(2026, 3, 29, 1, 30, tzinfo=datetime.timezone.utc)}

def _opaque(params, ctx):
    return {"handle": object()}

def _nap(params, ctx):
    released.wait(60)
    return {}

stamp = SimpleNamespace(params=Loose, run=_stamp)
opaque = SimpleNamespace(params=Loose, run=_opaque)
nap = SimpleNamespace(params=Loose, run=_nap)
"""


@pytest.fixture
def odd_plugins(tmp_path: Path) -> Iterator[None]:
    """A package whose step types are used as plugin authors write them, and get wrong."""
    site = tmp_path / "site"
    install_steps(
        site, "loomgit_odd_test", ODD_PLUGINS,
        {"stamp": "loomgit_odd_test:stamp", "opaque": "loomgit_odd_test:opaque",
         "nap": "loomgit_odd_test:nap", "norun": "loomgit_odd_test:Loose",
         "broken": "loomgit_odd_test_gone:thing"},
    )  # fmt: skip
    sys.path.insert(0, str(site))
    _clear()
    yield
    sys.modules["loomgit_odd_test"].released.set()
    sys.path.remove(str(site))
    sys.modules.pop("loomgit_odd_test", None)
    _clear()


def _workflow(steps: str) -> str:
    return (
        "apiVersion: loomgit/v1\nkind: Workflow\nmetadata: {name: odd}\n"
        f"spec:\n  triggers: [{{type: manual}}]\n  steps:\n{steps}"
    )


def test_a_plugin_that_cannot_be_used_is_told_why(
    odd_plugins: None, repo: Repo, cli: Callable[..., Result]
) -> None:
    """A type whose package is installed but broken is not merely unknown; and a
    parameter a plugin's model would silently drop is refused as a built-in's is."""
    repo.write(
        repo.wf("development", "odd"),
        _workflow(
            "    - {id: a, type: broken, with: {text: x}}\n"
            "    - {id: b, type: norun, with: {text: x}}\n"
            "    - {id: c, type: stamp, with: {text: x, max_len: 3}}\n"
        ),
    )
    out = cli("validate", "--repo", repo.path, "--env", "development").out
    assert (
        "odd.yaml:7:15: error[LG321]: step type 'broken' cannot be used: loomgit-odd-test 1.0"
        " registers it as loomgit_odd_test_gone:thing, which cannot be loaded:"
        " ModuleNotFoundError: No module named 'loomgit_odd_test_gone'"
    ) in out, out
    assert (
        "error[LG321]: step type 'norun' cannot be used: loomgit-odd-test 1.0 registers it"
        " as loomgit_odd_test:Loose, which has no `run(params, ctx)` function"
    ) in out, out
    assert (
        "error[LG322]: unknown key 'max_len' in spec.steps[2].with (did you mean 'max_length'?)"
        in out
    )


def test_a_plugin_step_output_is_recorded_as_json(
    odd_plugins: None, repo: Repo, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """A datetime or a set a plugin returns is given to later steps and recorded as JSON
    (ISO 8601 text, a list), not as Python's description of it; an object that has no
    JSON form fails the step, saying so."""
    repo.write(
        repo.wf("development", "odd"),
        _workflow(
            "    - {id: s, type: stamp, with: {text: hello, max_length: 4}}\n"
            "    - {id: t, type: set, with: {day: '{{ steps.s.output.at[:10] }}'}}\n"
        ),
    )
    state = tmp_path / "state"
    result = cli("run", "odd", "--repo", repo.path, "--state-dir", state, "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["output"] == {"day": "2026-03-29"}
    shown = cli("executions", "show", json.loads(result.out)["id"], "--state-dir", state,
                "--format", "json")  # fmt: skip
    recorded = json.loads(shown.out)["steps"][0]["output"]
    assert recorded == {"text": "hell", "tags": ["a"], "at": "2026-03-29T01:30:00Z"}
    repo.write(
        repo.wf("development", "odd"), _workflow("    - {id: o, type: opaque, with: {text: x}}\n")
    )
    result = cli("run", "odd", "--repo", repo.path, "--state-dir", state)
    assert result.code == 1
    assert (
        "step o failed: its output cannot be recorded as JSON: unable to serialize unknown"
        " type: <class 'object'>"
    ) in result.err, result.err


def test_a_plain_plugin_that_hangs_holds_no_other_step(
    odd_plugins: None, repo: Repo, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """A plain `run` cannot be stopped by a timeout: its thread goes on. Forty of them
    held past their timeouts once held every thread of the shared pool (at most 32), and
    the next plugin step waited for one; each now has a thread of its own."""
    naps = "".join(
        f"    - {{id: n{i}, type: nap, timeout: 50ms, on_error: continue, with: {{text: x}}}}\n"
        for i in range(40)
    )
    repo.write(
        repo.wf("development", "odd"),
        _workflow(naps + "    - {id: s, type: stamp, timeout: 2s, with: {text: done}}\n"),
    )
    state = tmp_path / "state"
    result = cli("run", "odd", "--repo", repo.path, "--state-dir", state, "--format", "json")
    assert result.code == 0, result.err
    ran = json.loads(result.out)
    assert ran["output"]["text"] == "done"
    shown = json.loads(
        cli("executions", "show", ran["id"], "--state-dir", state, "--format", "json").out
    )
    assert shown["steps"][0]["status"] == "timed_out"
    assert shown["steps"][0]["error"] == (
        "no result within 0.05s (the nap step's run function is not async: it cannot be"
        " stopped, and goes on in its thread until it returns)"
    )


def test_past_the_cap_a_plain_plugin_step_fails_at_once(
    odd_plugins: None,
    repo: Repo,
    cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls that never return could otherwise start threads without end."""
    import threading

    from loomgit import steps as kinds

    monkeypatch.setattr(kinds, "_alive", threading.BoundedSemaphore(1))
    monkeypatch.setattr(kinds, "PLUGIN_THREADS", 1)
    repo.write(
        repo.wf("development", "odd"),
        _workflow(
            "    - {id: n, type: nap, timeout: 50ms, on_error: continue, with: {text: x}}\n"
            "    - {id: s, type: stamp, with: {text: done}}\n"
        ),
    )
    result = cli("run", "odd", "--repo", repo.path, "--state-dir", tmp_path / "state")
    assert result.code == 1
    assert (
        "step s failed: 1 calls of plain plugin steps are running in this process (a call whose"
        " step timed out goes on until it returns); none is started until one ends"
    ) in result.err, result.err

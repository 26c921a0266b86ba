"""Step types: built-in parameter models, and plugin types from the `loomgit.steps`
entry point group, whose parameters validate checks too."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Repo, Result

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

    steps.plugins.cache_clear()
    kinds.kind.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    """An installed distribution, as pip would leave it, that registers a `slack` step."""
    site = tmp_path / "site"
    (site / "loomgit_slack_test.py").parent.mkdir(parents=True)
    (site / "loomgit_slack_test.py").write_text(PLUGIN)
    dist = site / "loomgit_slack_test-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: loomgit-slack-test\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[loomgit.steps]\nslack = loomgit_slack_test:SlackStep\n"
    )
    sys.path.insert(0, str(site))
    _clear()
    yield
    sys.path.remove(str(site))
    sys.modules.pop("loomgit_slack_test", None)
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

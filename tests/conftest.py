"""Shared fixtures: real git repositories in temporary folders, and the CLI run in-process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loomgit import errors, scaffold, yamlio
from loomgit.cli import main
from loomgit.models.workflow import Workflow
from loomgit.redact import Redactor
from loomgit.runtime import Deployment

HELLO = """\
apiVersion: loomgit/v1
kind: Workflow
metadata:
  name: hello
spec:
  triggers:
    - type: webhook
      path: hello
    - type: schedule
      cron: "0 9 * * 1-5"
      timezone: Europe/Berlin
  credentials: [greeter]
  steps:
    - id: greet
      type: set
      with:
        text: "{{ vars.greeting }}, {{ trigger.body.name }}"
    - id: say
      type: log
      with:
        message: "{{ steps.greet.output.text }}"
"""

VARIABLES = """\
apiVersion: loomgit/v1
kind: Variables
variables:
  greeting: Hello
"""


@pytest.fixture(autouse=True, scope="session")
def _git_identity() -> Iterator[None]:
    """Tests commit; a CI machine may have no git identity configured."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "GIT_AUTHOR_NAME": "Test Author",
            "GIT_AUTHOR_EMAIL": "author@example.com",
            "GIT_COMMITTER_NAME": "Test Committer",
            "GIT_COMMITTER_EMAIL": "committer@example.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes execution history into the user's own state folder."""
    monkeypatch.setenv("LOOMGIT_STATE_DIR", str(tmp_path / "loomgit-state"))
    monkeypatch.setattr(errors, "_report_folder", None)  # a --state-dir of an earlier test


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def digest(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


def state_yaml(env: str, entries: dict[str, dict[str, object]]) -> str:
    lines = ["apiVersion: loomgit/v1", "kind: Environment", f"environment: {env}", "workflows:"]
    if not entries:
        lines[-1] += " {}"
    for name, fields in entries.items():
        lines.append(f"  {name}:")
        lines.extend(f"    {k}: {v}" for k, v in fields.items())
    return "\n".join(lines) + "\n"


def promoted(
    content: str, version: int, source: str, commit: str, active: bool = False
) -> dict[str, object]:
    return {
        "version": version,
        "active": str(active).lower(),
        "digest": digest(content),
        "promoted_from": source,
        "source_commit": commit,
    }


@dataclass
class Repo:
    """A directory-layout loomgit repository: development holds hello, staging and
    production hold it promoted as v1."""

    path: Path
    source_commit: str

    def write(self, rel: str, content: str | bytes) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        return target

    def wf(self, env: str, name: str = "hello") -> str:
        return f"environments/{env}/workflows/{name}.yaml"


@pytest.fixture
def repo(tmp_path: Path, age_key: AgeKey, greeter_file: bytes) -> Repo:
    path = tmp_path / "flows"
    envs = ["development", "staging", "production"]
    scaffold.init(path, "directories", envs)
    r = Repo(path, "")
    r.write(".sops.yaml", sops_config(age_key.recipient, envs))
    r.write("credentials.sops.yaml", greeter_file)
    for env in envs:
        r.write(f"environments/{env}/variables.yaml", VARIABLES)
    r.write(r.wf("development"), HELLO)
    r.source_commit = commit_all(path, "add hello")
    for env, source in (("staging", "development"), ("production", "staging")):
        r.write(r.wf(env), HELLO)
        r.write(
            f"environments/{env}/environment.yaml",
            state_yaml(env, {"hello": promoted(HELLO, 1, source, r.source_commit)}),
        )
    commit_all(path, "promote hello")
    return r


def install_steps(site: Path, module: str, source: str, entry_points: dict[str, str]) -> None:
    """A distribution installed in `site`, as pip would leave it, registering step types
    (`entry_points`: type name -> `module:object`)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    name = module.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[loomgit.steps]\n{lines}")


def put_everywhere(repo: Repo, content: str, active: dict[str, bool], name: str = "hello") -> str:
    """Commits `content` as workflow `name` in every environment (v1 past development),
    active where `active` says; returns the commit."""
    for env, source in (
        ("development", None),
        ("staging", "development"),
        ("production", "staging"),
    ):
        repo.write(repo.wf(env, name), content)
        if source is not None:
            entry = promoted(content, 1, source, repo.source_commit, active.get(env, False))
            repo.write(f"environments/{env}/environment.yaml", state_yaml(env, {name: entry}))
    return commit_all(repo.path, f"{name} everywhere")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Runs `loomgit ARGS` in-process through the real entry point and its error handler."""

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        return Result(code, captured.out, captured.err)

    return run


# -- credentials: throwaway age identities and real sops ---------------------------------


@dataclass(frozen=True)
class AgeKey:
    """A throwaway age identity made for this test run (never a real key)."""

    path: Path
    recipient: str


def make_key(folder: Path, name: str) -> AgeKey:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = folder / f"{name}.agekey"
    path.write_text(f"# throwaway test key for {name}\n{identity}\n")
    path.chmod(0o600)
    return AgeKey(path, str(identity.to_public()))


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    return make_key(tmp_path_factory.mktemp("keys"), "all-environments")


@pytest.fixture(scope="session")
def greeter_file(age_key: AgeKey) -> bytes:
    """The global credentials file the fixture repositories share: greeter.token."""
    from loomgit import sops

    return sops.encrypt(
        {"greeter": {"token": "LOOMGIT-CANARY-greeter"}},
        [age_key.recipient],
        what="credentials.sops.yaml",
    )


def sops_config(recipient: str, envs: list[str], layout: str = "directories") -> str:
    rules = []
    if layout == "directories":
        rules += [
            f"  - path_regex: environments/{e}/credentials\\.sops\\.yaml$\n    age: {recipient}\n"
            for e in envs
        ]
        rules.append(f"  - path_regex: credentials\\.sops\\.yaml$\n    age: {recipient}\n")
    else:
        rules.append(f"  - path_regex: ^credentials\\.sops\\.yaml$\n    age: {recipient}\n")
        rules.append(f"  - path_regex: ^global-credentials\\.sops\\.yaml$\n    age: {recipient}\n")
    return "creation_rules:\n" + "".join(rules)


@pytest.fixture(params=["directories", "branches"])
def pipe(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    cli: Callable[..., Result],
    age_key: AgeKey,
    greeter_file: bytes,
) -> Any:
    """A loomgit repository of each layout, for scenario tests that must behave alike."""
    from pipeline import Pipeline  # pipeline.py builds on this module

    return Pipeline.create(tmp_path, request.param, cli, age_key, greeter_file)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc, so Linux only)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += frontier
    return found


# -- a deployment to run in-process ---------------------------------------------------


def deployment(
    steps: str,
    *,
    timeout: str | None = None,
    variables: dict[str, Any] | None = None,
    credentials: dict[str, dict[str, Any]] | None = None,
) -> Deployment:
    """A workflow named demo of `steps` (YAML) with a manual trigger, as development runs
    it, its credentials' values redacted."""
    spec = "spec:\n  triggers: [{type: manual}]\n"
    if timeout:
        spec += f"  timeout: {timeout}\n"
    spec += "  steps:\n" + textwrap.indent(textwrap.dedent(steps), "    ")
    doc = f"apiVersion: loomgit/v1\nkind: Workflow\nmetadata: {{name: demo}}\n{spec}"
    wf = Workflow.model_validate(yamlio.load(doc.encode()))
    creds = credentials or {}
    secrets = [str(v) for fields in creds.values() for v in fields.values()]
    return Deployment(
        wf,
        "development",
        variables=variables or {},
        credentials=creds,
        redactor=Redactor(secrets),
    )

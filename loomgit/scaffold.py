"""`loomgit init`: a new loomgit repository in either layout, with a first commit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from loomgit import schema
from loomgit.errors import LoomgitError, UsageError
from loomgit.models.base import ENV_NAME
from loomgit.vcs import CONFIG_FILE, Git, init_repository, toplevel_of

GITIGNORE = "# loomgit's local state (execution history, daemon clone)\n.loomgit/\n"
SOPS_CONFIG_TEXT = (
    "# SOPS creation rules: the age recipients of each credentials file. Managed by\n"
    "# `loomgit keys add`, `keys generate` and `keys rm`; the first matching rule applies.\n"
    "creation_rules: []\n"
)
CI_WORKFLOW = ".github/workflows/loomgit.yml"
# The documents' JSON Schemas, committed with the skeleton so that the `$schema` lines
# below (and the one the README gives for workflow files) resolve in an editor.
SCHEMAS = "schemas"


def schema_line(path: str) -> str:
    """The first line that points the YAML language server at a schema, by relative path."""
    return f"# yaml-language-server: $schema={path}\n"


def schemas_from(folder: str) -> str:
    """The schemas' folder relative to `folder` (a path from the loomgit root, ending `/`)."""
    return "/".join([".."] * folder.count("/") + [SCHEMAS])


def schema_files() -> dict[str, bytes]:
    return {f"{SCHEMAS}/{name}": schema.dumps(s).encode() for name, s in schema.generate().items()}


def ci_workflow(repo_arg: str, base_ref: str) -> str:
    """The GitHub Actions workflow that gates pull requests with loomgit."""
    repo = f" --repo {repo_arg}" if repo_arg else ""
    return f"""\
# Gate every pull request: the workflows must validate, and every change to an
# environment after the first must be a promotion, activation or rollback.
name: loomgit
on:
  pull_request:
jobs:
  check:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0   # check-promotion reads the commits of the pull request
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: pip install loomgit
      - run: loomgit validate{repo} --format github
      # validate ran just above, so the gate checks only the commits; it runs even if
      # validate failed, and writes what the pull request changes to the job's summary:
      - if: ${{{{ !cancelled() }}}}
        run: >-
          loomgit check-promotion{repo} --base "{base_ref}" --no-validate --format github
          --summary "$GITHUB_STEP_SUMMARY"
"""


@dataclass(frozen=True)
class InitResult:
    path: Path
    layout: str
    environments: list[str]
    commits: dict[str, str]  # branch -> commit
    created_repository: bool
    ci_kept: str | None = None  # a CI workflow already there, left as it is (its path)


def parse_environments(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--environments needs at least one name, e.g. development,production")
    for name in names:
        if not re.match(ENV_NAME, name):
            raise UsageError(
                f"'{name}' is not a valid environment name",
                hint="use lower-case letters, digits and '-', starting with a letter",
            )
    if len(set(names)) != len(names):
        raise UsageError("--environments lists a name twice")
    return names


def config_text(layout: str, environments: list[str]) -> str:
    envs = "\n".join(f"  - name: {name}" for name in environments)
    return (
        schema_line(f"{SCHEMAS}/repository.schema.json") + "apiVersion: loomgit/v1\n"
        "kind: Repository\n"
        f"layout: {layout}\n"
        "environments:                # pipeline order; the first is edited by hand\n"
        f"{envs}\n"
    )


def environment_text(env: str) -> str:
    return (
        "# Written by loomgit: what this environment runs. Change it with loomgit commands.\n"
        "apiVersion: loomgit/v1\n"
        "kind: Environment\n"
        f"environment: {env}\n"
        "workflows: {}\n"
    )


def variables_text(env: str, schemas: str) -> str:
    """`schemas`: the schemas' folder, relative to the file's."""
    return (
        schema_line(f"{schemas}/variables.schema.json")
        + f"# Plain values for {env}, used in templates as {{{{ vars.NAME }}}}.\n"
        "apiVersion: loomgit/v1\n"
        "kind: Variables\n"
        "variables: {}\n"
    )


def _env_files(env: str, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}environment.yaml": environment_text(env).encode(),
        f"{prefix}variables.yaml": variables_text(env, schemas_from(prefix)).encode(),
        f"{prefix}workflows/.gitkeep": b"",
    }


def init(target: Path, layout: str, environments: list[str]) -> InitResult:
    """Creates (or adopts) a git repository at `target` and commits the loomgit skeleton."""
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder")
    if (target / CONFIG_FILE).exists():
        raise LoomgitError(
            f"{target / CONFIG_FILE} already exists; this is a loomgit repository",
            hint="nothing was changed; edit loomgit.yaml to change the pipeline",
        )
    existing = next(p for p in (target, *target.parents) if p.exists())
    top = toplevel_of(existing)
    created = top is None
    if layout == "branches":
        if top is not None and top != target:
            raise UsageError(
                "the branch layout needs the top level of a git repository",
                hint=f"run `loomgit init {top}` or use --layout directories",
            )
        return _init_branches(target, environments, created)
    target.mkdir(parents=True, exist_ok=True)
    if top is None:
        init_repository(target, "main")
        top = target
    prefix = target.relative_to(top).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    files = {
        CONFIG_FILE: config_text(layout, environments).encode(),
        ".gitignore": GITIGNORE.encode(),
        ".sops.yaml": SOPS_CONFIG_TEXT.encode(),
        **schema_files(),
    }
    for env in environments:
        files.update(_env_files(env, f"environments/{env}/"))
    for rel in files:
        if (target / rel).exists() and rel != ".gitignore":
            raise LoomgitError(f"{target / rel} already exists", hint="nothing was changed")
    for rel, data in files.items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel == ".gitignore" and dest.exists():
            ignored = dest.read_bytes()  # as it is: git does not require UTF-8 there
            if b".loomgit/" not in ignored:
                dest.write_bytes(ignored.rstrip(b"\n") + b"\n" + GITIGNORE.encode())
        else:
            dest.write_bytes(data)
    paths = [prefix + rel for rel in files]
    ci_path = top / CI_WORKFLOW
    kept = ci_path.exists()  # someone's own, or another loomgit repository's gate
    if not kept:  # the pull-request gate sits at the top of the git repository
        ci_path.parent.mkdir(parents=True, exist_ok=True)
        ci_path.write_text(ci_workflow(prefix.rstrip("/"), "origin/${{ github.base_ref }}"))
        paths.append(CI_WORKFLOW)
    with Git(top) as git:
        git.run("add", "--", *paths)
        git.run("commit", "--quiet", "-m", _message(environments), "--", *paths)
        branch = git.current_branch() or "HEAD"
        commits = {branch: git.resolve("HEAD")}
    return InitResult(
        target, layout, environments, commits, created, str(ci_path) if kept else None
    )


def _message(environments: list[str]) -> str:
    return f"Initialise loomgit repository ({' -> '.join(environments)})"


def _init_branches(target: Path, environments: list[str], created: bool) -> InitResult:
    branches = [f"env/{env}" for env in environments]
    in_the_way = [
        n
        for n in (
            ".gitignore",
            ".sops.yaml",
            "environment.yaml",
            "variables.yaml",
            "workflows",
            SCHEMAS,
        )
        if (target / n).exists()
    ]
    if created:
        if in_the_way:
            raise LoomgitError(
                f"{target / in_the_way[0]} already exists",
                hint="nothing was changed; start from an empty folder",
            )
        init_repository(target, branches[0])
    commits: dict[str, str] = {}
    with Git(target) as git:
        unborn = not git.has_commits()
        if unborn and in_the_way:
            raise LoomgitError(
                f"{target / in_the_way[0]} already exists",
                hint="nothing was changed; start from an empty folder",
            )
        for branch in branches:
            if git.ref(f"refs/heads/{branch}"):
                raise LoomgitError(f"branch {branch} already exists", hint="nothing was changed")
        base = {
            CONFIG_FILE: config_text("branches", environments).encode(),
            ".gitignore": GITIGNORE.encode(),
            ".sops.yaml": SOPS_CONFIG_TEXT.encode(),
            CI_WORKFLOW: ci_workflow("", "origin/${{ github.base_ref }}").encode(),
            **schema_files(),
        }
        parent: list[str] = []
        for env, branch in zip(environments, branches, strict=True):
            tree = git.write_tree({**base, **_env_files(env, "")})
            commit = git.commit_tree(tree, parent, f"{_message(environments)}: {env}")
            git.update_ref(f"refs/heads/{branch}", commit, None)
            commits[branch] = commit
            parent = [commit]
        if unborn:
            # Nothing to lose: no commits, and none of our files were in the folder.
            git.run("symbolic-ref", "HEAD", f"refs/heads/{branches[0]}")
            git.run("checkout", "--quiet", "HEAD", "--", ".")
    return InitResult(target, "branches", environments, commits, created)

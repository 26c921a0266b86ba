"""Shell completion: what a TAB offers for an environment, a workflow, a git ref or a
credential, read from the repository the command line names (`--repo`, else the
current folder). Click completes the commands and options, and calls these for the
values (`loomgit completion bash` prints the script that asks it).

A completion never fails the shell: a repository that cannot be read offers nothing,
and the command says why when it is run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from loomgit.workspace import Workspace

SHELLS = ("bash", "zsh", "fish")
Completer = Callable[[click.Context, click.Parameter, str], list[str]]

# Commands whose workflow is always, or by default, the first environment's.
_FIRST_ENVIRONMENT = frozenset({"run", "revisions", "restore", "show"})


def script(cli: click.Command, shell: str) -> str:
    """The script that makes `shell` complete `loomgit` (Click's, for our entry point)."""
    from click.shell_completion import get_completion_class

    found = get_completion_class(shell)
    if found is None:  # the command's Choice lets only SHELLS through
        raise click.BadParameter(f"no completion for {shell}")
    return found(cli, {}, "loomgit", "_LOOMGIT_COMPLETE").source()


def _repo(ctx: click.Context) -> Path:
    repo = ctx.params.get("repo")
    return repo.expanduser() if isinstance(repo, Path) else Path(".")


def _offering(read: Callable[[Workspace, click.Context], Iterable[str]]) -> Completer:
    """A completer offering what `read` finds in the open repository, in its order, that
    starts with what was typed."""

    @functools.wraps(read)
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        from loomgit.workspace import Workspace

        try:
            with Workspace(_repo(ctx)) as ws:
                found = list(dict.fromkeys(read(ws, ctx)))
        except Exception:  # anything unreadable offers nothing: the shell is not ours to break
            return []
        return [name for name in found if name.startswith(incomplete)]

    return complete


@_offering
def environments(ws: Workspace, ctx: click.Context) -> Iterable[str]:
    """`--env`, `--to`, `--from`: the environments loomgit.yaml lists, in pipeline order."""
    return ws.config.names


@_offering
def targets(ws: Workspace, ctx: click.Context) -> Iterable[str]:
    """`promote --to`, `diff --to`: where a promotion can go, every environment but the
    first."""
    return ws.config.names[1:]


def environment_list(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """`serve --environments a,b`: the next environment of a comma-separated list."""
    done, comma, last = incomplete.rpartition(",")
    given = set(done.split(",")) if comma else set()
    offered = environments(ctx, param, last)
    return [f"{done}{comma}{name}" for name in offered if name not in given]


def _workflow_environments(ws: Workspace, ctx: click.Context) -> list[str]:
    """The environments a command's WORKFLOW is looked up in: the one named (`--env`,
    `--from`), the one before `--to` (where a promotion copies from), the first for the
    commands that read only the first; else every one."""
    names, given = ws.config.names, ctx.params
    for key in ("from_env", "env"):
        if given.get(key) in names:
            return [given[key]]
    if given.get("to_env") in names:
        at = names.index(given["to_env"])
        return names[max(at - 1, 0) : at]  # nothing is promoted into the first
    if ctx.command.name in _FIRST_ENVIRONMENT:
        return [ws.config.first]
    return names


@_offering
def workflows(ws: Workspace, ctx: click.Context) -> Iterable[str]:
    """WORKFLOW: the workflows of the environment the command reads, less those already
    on the line (`promote a b …`)."""
    given = ctx.params.get("workflows") or ()
    names = {n for env in _workflow_environments(ws, ctx) for n in ws.workflow_names(env)}
    return sorted(names - set(given))


@_offering
def credential_names(ws: Workspace, ctx: click.Context) -> Iterable[str]:
    """A credential's NAME: those the environment named can resolve (every one without
    an environment)."""
    from loomgit import credops

    env = ctx.params.get("env") or ctx.params.get("from_env")
    rows = credops.listing(ws, env if env in ws.config.names else None)
    return sorted({row.name for row in rows})


def refs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """`--base`, `--head`, `--rev`, `--commit`: the repository's branches (local and
    remote) and tags, and HEAD."""
    from loomgit.vcs import Git, find_root

    try:
        with Git(find_root(_repo(ctx)).toplevel) as git:
            names = ["HEAD", *git.ref_names()]
    except Exception:  # as _offering: nothing rather than a broken shell
        return []
    return [name for name in dict.fromkeys(names) if name.startswith(incomplete)]

"""The command line: parse arguments, call one library function, render the result.

Only click is imported at start-up; each command imports what it needs, so
`loomgit --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from loomgit import __version__
from loomgit.completion import SHELLS, environments, refs
from loomgit.errors import LoomgitError, crash_report

ISSUES_URL = "https://github.com/loomgit/loomgit/issues"
FORMATS = click.Choice(["text", "json", "github"])


def format_option(func: Any) -> Any:
    """`--format text|json`, as `fmt`: JSON for scripts."""
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(func)


def workflow_arguments(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A WORKFLOW argument (one, several or none): each must be a name a workflow can
    have, so a typo or a path is refused as such, not looked up as a file."""
    names = [value] if isinstance(value, str) else list(value or ())
    if not names:  # nothing to check, nothing to import (a TAB completing an option)
        return value
    import re

    from loomgit.errors import UsageError
    from loomgit.models.base import NAME
    from loomgit.wording import PATTERN_WORDS

    for name in names:
        if not re.fullmatch(NAME, name):
            raise UsageError(
                f"'{name}' is not a workflow name",
                hint=f"workflow names are {PATTERN_WORDS[NAME]},"
                " as in environments/ENV/workflows/NAME.yaml",
            )
    return value


def printable(text: str) -> str:
    """An error stays one line: a control character it quotes from what was typed (a
    newline or an escape sequence in an argument) is shown escaped, not acted on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def echo_json(value: Any) -> None:
    """A command's `--format json` report, on standard output."""
    import json

    click.echo(json.dumps(value, indent=2))


def written_json(written: Any) -> dict[str, object]:
    """Where a commit went (a promotion.Written), as the JSON reports of the commands
    that write give it."""
    return {"commit": written.commit, "branch": written.branch, "created_from": written.from_remote}


def warn_if_unpushable(written: Any) -> None:
    """A commit onto a branch that is behind origin's copy would not push as it is
    (promotion.Written.behind); `promote` says so in its plan, the other writers here."""
    if written is not None and written.behind:
        from loomgit.promotion import NOT_PUSHABLE

        click.echo(f"warning: {written.behind}: {NOT_PUSHABLE}", err=True)


def repo_option(func: Any) -> Any:
    return click.option(
        "--repo",
        type=click.Path(path_type=Path),
        default=".",
        show_default=True,
        help="Folder of the loomgit repository (searched upward for loomgit.yaml).",
    )(func)


def no_cache_option(func: Any) -> Any:
    return click.option(
        "--no-cache",
        "no_cache",
        is_flag=True,
        envvar="LOOMGIT_NO_CACHE",
        help="Parse every file again instead of reusing what earlier runs found about "
        "unchanged ones (kept by blob id in .git/loomgit/; also $LOOMGIT_NO_CACHE=1).",
    )(func)


def version_number(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A workflow's version, as a number (`3`) or as `status` and `history` print it
    (`v3`)."""
    from loomgit.records import version_of

    if value is None:
        return None
    number = version_of(value)
    if number is None:
        raise click.BadParameter(f"{value!r} is not a version; give its number, as 3 or v3")
    return number


def refuse_empty(command: click.Command, ctx: click.Context, args: list[str]) -> None:
    """Refuses an option given an empty value, free text (TEXT) aside: `--env "$TARGET"`
    or `--branch "$BRANCH"` with the variable unset would otherwise be read as the option
    left out (every environment, no branch) or, for a path, as the current folder."""
    if ctx.resilient_parsing or any(arg in ctx.help_option_names for arg in args):
        return  # a shell completing the line, or --help, which answers whatever else is on it
    try:  # the words as Click reads them; what it refuses, it refuses when parsing for real
        given, _, _ = command.make_parser(ctx).parse_args(args=list(args))
    except click.ClickException:
        return
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or param.metavar == "TEXT" or param.is_flag:
            continue
        value = given.get(param.name) if param.name else None
        if value == "" or (isinstance(value, list) and "" in value):
            from loomgit.errors import UsageError

            option = max(param.opts, key=len)
            hint = (
                f"give {option} a value"
                if param.required
                else f"leave {option} out, or give it a value"
            )
            raise UsageError(
                f"{option} was given an empty value", hint=f"{hint}; is a shell variable unset?"
            )


class Command(click.Command):
    """A command that, missing an environment option (`--env ENV`, `--to ENV`) while it
    was given a word too many, says how to give that word as the option: people type
    `loomgit activate greet live` or `loomgit promote greet staging`. An unknown option
    that begins a known one (`--to` for `--to-version`) is answered with that one, where
    Click's likeness measure would offer another (`--repo`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_empty(self, ctx, args)
        try:
            return super().parse_args(ctx, list(args))
        except click.NoSuchOption as exc:
            longer = sorted(
                {
                    opt
                    for param in self.get_params(ctx)
                    for opt in (*param.opts, *param.secondary_opts)
                    if opt.startswith("--") and opt.startswith(exc.option_name)
                }
            )
            if not exc.option_name.startswith("--") or not longer:
                raise
            meant = " or ".join(repr(opt) for opt in longer)
            raise click.NoSuchOption(
                exc.option_name,
                f"No such option {exc.option_name!r}. Did you mean {meant}?",
                ctx=ctx,
            ) from None
        except click.MissingParameter as exc:
            hint = self._as_option(ctx, args, exc.param)
            if hint is None:
                raise
            from loomgit.errors import UsageError

            raise UsageError(
                f"missing option {hint[0]} ({hint[1]!r} was taken as one word too many)",
                hint=hint[2],
            ) from None

    def _as_option(
        self, ctx: click.Context, args: list[str], param: click.Parameter | None
    ) -> tuple[str, str, str] | None:
        """(the option, the word, the command line with the word given as the option), if
        a word beyond what the command's arguments take could be that option's value."""
        import shlex

        if not isinstance(param, click.Option) or param.metavar != "ENV":
            return None
        words = self._words(ctx, args)
        arguments = [p for p in self.params if isinstance(p, click.Argument)]
        fixed = sum(p.nargs for p in arguments if p.nargs > 0)
        if any(p.nargs < 0 for p in arguments):  # WORKFLOW...: the last word, if not the only
            at = words[-1] if len(words) > fixed + 1 else None
        else:
            at = words[fixed] if len(words) > fixed else None
        if at is None:
            return None
        word = args[at]
        option = max(param.opts, key=len)
        rest = [*args[:at], *args[at + 1 :]]
        # After `--` every word is an argument, so the option goes before it.
        put = rest.index("--") if "--" in args[:at] else at
        line = [*ctx.command_path.split(), *rest[:put], option, word, *rest[put:]]
        return option, word, shlex.join(line)

    def _words(self, ctx: click.Context, args: list[str]) -> list[int]:
        """Where in `args` the words stand that are neither options nor their values."""
        valued = {
            opt
            for p in self.get_params(ctx)
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for opt in p.opts
        }
        words: list[int] = []
        i = 0
        while i < len(args):
            if args[i] == "--":
                return [*words, *range(i + 1, len(args))]
            if args[i].startswith("-") and args[i] != "-":
                i += 2 if args[i] in valued else 1
                continue
            words.append(i)
            i += 1
        return words


class Group(click.Group):
    """The command groups: their commands are `Command`s, their groups `Group`s."""

    command_class = Command
    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_empty(self, ctx, args)
        return super().parse_args(ctx, args)


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="loomgit")
def cli() -> None:
    """loomgit keeps automation workflows as YAML in git and promotes them through
    environments (development -> staging -> production) as reviewed commits.

    \b
    Examples:
      loomgit init my-flows --environments development,staging,production
      loomgit validate --repo my-flows
      loomgit validate --rev origin/main --format github
    """


@cli.command()
@repo_option
@click.option(
    "--env",
    "env",
    metavar="NAME",
    shell_complete=environments,
    help="Check only this environment.",
)
@click.option(
    "--rev",
    metavar="REF",
    shell_complete=refs,
    help="Check a commit (branch, tag or id) instead of the work tree.",
)
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="text",
    show_default=True,
    help="text for people, json for scripts, github for pull-request annotations.",
)
@no_cache_option
def validate(repo: Path, env: str | None, rev: str | None, fmt: str, no_cache: bool) -> None:
    """Check every environment's workflows, variables and promotion records.

    Exits 0 when valid, 1 when problems were found, 2 when the repository cannot be read.

    \b
    Examples:
      loomgit validate
      loomgit validate --env production --rev HEAD
      loomgit validate --format json | jq '.[].code'
    """
    from loomgit import report
    from loomgit.validate import validate as run

    with report.annotated(fmt):
        result = run(repo, rev=rev, env=env, reuse=not no_cache)
    click.echo(report.render(result, fmt))
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option(
    "--layout",
    type=click.Choice(["directories", "branches"]),
    default="directories",
    show_default=True,
    help="Environments as folders on one branch, or as branches.",
)
@click.option(
    "--environments",
    default="development,staging,production",
    show_default=True,
    help="Pipeline order, comma-separated.",
)
@format_option
def init(directory: Path, layout: str, environments: str, fmt: str) -> None:
    """Create a loomgit repository (or add one to an existing git repository).

    \b
    Examples:
      loomgit init flows
      loomgit init flows --layout branches --environments test,live
    """
    from loomgit import scaffold

    result = scaffold.init(directory, layout, scaffold.parse_environments(environments))
    if fmt == "json":
        report = {
            "path": str(result.path),
            "layout": layout,
            "environments": list(result.environments),
            "created_repository": result.created_repository,
            "commits": [{"commit": c, "branch": b} for b, c in result.commits.items()],
            "ci_workflow_kept": result.ci_kept,
        }
        echo_json(report)
        return
    what = "created git repository and " if result.created_repository else ""
    click.echo(f"{what}initialised loomgit in {result.path} ({layout} layout)")
    click.echo(f"pipeline: {' -> '.join(result.environments)}")
    for branch, commit in result.commits.items():
        click.echo(f"  {branch}: {commit[:12]}")
    first = result.environments[0]
    folder = f"environments/{first}/workflows/" if layout == "directories" else "workflows/"
    where = folder if layout == "directories" else f"{folder} on branch env/{first}"
    click.echo(f"next: add a workflow under {where}, then run `loomgit validate`")
    click.echo(
        "editor support: start a workflow file with "
        f"`# yaml-language-server: $schema={scaffold.schemas_from(folder)}/workflow.schema.json`"
    )
    if result.ci_kept:  # the gate of pull requests may not cover this repository
        repo = os.path.relpath(result.path, Path(result.ci_kept).parents[2])
        option = "" if repo == "." else f" --repo {repo}"
        click.echo(
            f"note: {result.ci_kept} was already there and is left as it is; make sure it "
            f"gates this repository too: `loomgit validate{option}` and "
            f"`loomgit check-promotion{option} --base origin/BASE`",
            err=True,
        )


@cli.command()
@click.option(
    "--write",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one <kind>.schema.json per document kind into this folder.",
)
@click.argument(
    "kind",
    required=False,
    type=click.Choice(["repository", "workflow", "environment", "variables"]),
)
def schema(folder: Path | None, kind: str | None) -> None:
    """Print or write the JSON Schemas of loomgit's documents (for editors and CI).

    \b
    Examples:
      loomgit schema workflow > workflow.schema.json
      loomgit schema --write schemas/
    """
    from loomgit import schema as schemas

    if folder is not None:
        for path in schemas.write(folder):
            click.echo(f"wrote {path}")
        return
    generated = schemas.generate()
    if kind is None:
        raise click.UsageError("name a document kind, or use --write FOLDER")
    click.echo(schemas.dumps(generated[f"{kind}.schema.json"]), nl=False)


@cli.command()
@click.argument("shell", metavar="SHELL", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the script that has SHELL (bash, zsh or fish) complete loomgit's commands and
    options, and their values from the repository: environments, workflows, git refs,
    credential names (from --repo when it comes before the word, else the current folder).

    \b
    Examples:
      eval "$(loomgit completion bash)"    # in ~/.bashrc (bash 4.4 or later)
      eval "$(loomgit completion zsh)"     # in ~/.zshrc, after compinit
      loomgit completion fish > ~/.config/fish/completions/loomgit.fish
    """
    from loomgit.completion import script

    click.echo(script(cli, shell))


# Commands defined in other modules register themselves on `cli` when imported.
from loomgit import cli_credentials, cli_inspect, cli_promote, cli_retry, cli_run, cli_serve  # noqa: E402, F401

_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", None)  # Click 8.2 and later


def _as_ours(message: str) -> str:
    """Click's sentence as loomgit words its errors: `No such option '--to'. Did you
    mean '--to-version'?` is `no such option '--to' (did you mean '--to-version'?)`."""
    said, _, guess = message.partition(". Did you mean ")
    said = said.rstrip(".")
    said = said[:1].lower() + said[1:]
    return f"{said} (did you mean {guess.rstrip('?')}?)" if guess else said


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: one handler turns every failure into a message and an exit code."""
    try:
        cli.main(args=argv, prog_name="loomgit", standalone_mode=False)
    except LoomgitError as exc:
        click.echo(f"error: {printable(exc.message)}", err=True)
        if exc.hint:
            click.echo(f"hint: {printable(exc.hint)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # Click's own: a bad option, value or file
        if _NO_ARGS_IS_HELP is not None and isinstance(exc, _NO_ARGS_IS_HELP):
            exc.show()  # a group named alone (`loomgit keys`): its help, as it asks
            sys.exit(exc.exit_code)
        click.echo(f"error: {printable(_as_ours(exc.format_message()))}", err=True)
        if isinstance(exc, click.UsageError):
            command = exc.ctx.command_path if exc.ctx else "loomgit"
            click.echo(f"hint: `{command} --help` lists its options, with examples", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:
        where = crash_report(exc)
        click.echo(f"loomgit: unexpected error ({type(exc).__name__}). This is a bug.", err=True)
        if where:
            click.echo(
                f"The details are in {where}; please attach it to a report at {ISSUES_URL}",
                err=True,
            )
        sys.exit(3)
    sys.exit(0)

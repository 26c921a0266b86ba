"""Commands for credentials and age keys. Values come from a prompt, standard input or a
file, never from arguments (those show in process lists), and are never printed."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from loomgit.agekeys import KEY_DIR_ENV, AgeKeys
from loomgit.cli import (
    cli,
    echo_json,
    format_option,
    repo_option,
    warn_if_unpushable,
    written_json,
)
from loomgit.completion import credential_names, environments
from loomgit.errors import UsageError

KEY_HELP = (
    "Age identity of an environment, ENV=PATH (repeatable); default from "
    "LOOMGIT_AGE_KEY_FILE_<ENV>."
)
F = TypeVar("F", bound=Callable[..., Any])
KEY_DIR_HELP = (
    f"A folder of keys named ENV.agekey, for every environment that has one there "
    f"(also: ${KEY_DIR_ENV}); --age-key-file wins over it."
)


def key_options(help_text: str = KEY_HELP) -> Callable[[F], F]:
    """`--age-key-file ENV=PATH` (repeatable) and `--age-key-dir DIR`, handed to the
    command as one `age_keys` (an `AgeKeys`)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(
            *args: Any, age_keys: tuple[str, ...], age_key_dir: Path | None, **kw: Any
        ) -> Any:
            return func(*args, age_keys=AgeKeys(age_keys, age_key_dir), **kw)

        with_dir = click.option(
            "--age-key-dir",
            envvar=KEY_DIR_ENV,
            type=click.Path(path_type=Path, file_okay=False),
            metavar="DIR",
            help=KEY_DIR_HELP,
        )(command)
        option = click.option(
            "--age-key-file", "age_keys", multiple=True, metavar="ENV=PATH", help=help_text
        )
        return cast(F, option(with_dir))

    return decorate


key_option = key_options()


@cli.group()
def credentials() -> None:
    """Global and environment-scoped secrets, SOPS-encrypted with age.

    \b
    Examples:
      loomgit credentials list
      echo '{"token": "..."}' | loomgit credentials set shop_api --env staging --from-json -
      loomgit credentials copy shop_api --from staging --to production
    """


def _echo_json(rows: list[Any]) -> None:
    from dataclasses import asdict

    click.echo(json.dumps([asdict(r) for r in rows], indent=2))


@credentials.command("list")
@click.option(
    "--env", "env", metavar="ENV", shell_complete=environments, help="Only what ENV uses."
)
@format_option
@repo_option
def list_(env: str | None, fmt: str, repo: Path) -> None:
    """Names, fields, scope and where each credential resolves; needs no key.

    \b
    Example:
      loomgit credentials list --env production
    """
    from loomgit import credops
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        rows = credops.listing(ws, ws.check_env(env) if env else None)
    if fmt == "json":
        _echo_json(rows)
        return
    for r in rows:
        where = ", ".join(r.resolves_in) or "nowhere"
        fields = ", ".join(r.fields)
        click.echo(f"{r.name:<20} {r.scope:<12} fields: {fields:<24} resolves in: {where}")
    if not rows:
        click.echo("no credentials yet")


def _read_fields(from_json: Any) -> dict[str, Any]:
    if from_json is not None:
        # Where it fails, never what it read: the text holds the secret values.
        source = "standard input" if from_json.name == "<stdin>" else from_json.name
        example = '{"token": "…"}'
        try:
            data = json.load(from_json, object_pairs_hook=_unique_fields)
        except UnicodeDecodeError:
            raise UsageError(f"--from-json: {source} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            if not exc.doc.strip():
                raise UsageError(
                    f"--from-json: {source} is empty", hint=f"give an object of fields, {example}"
                ) from None
            raise UsageError(
                f"--from-json: {source} is not JSON: {exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}",
                hint=f"give an object of fields, {example}",
            ) from None
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else "a single value"
            raise UsageError(
                f"--from-json needs a JSON object of fields, not {kind}",
                hint=f"give an object of fields, {example}",
            )
        return data
    if not sys.stdin.isatty():
        raise UsageError("no fields given", hint="use --from-json FILE (or - for stdin)")
    fields: dict[str, Any] = {}
    while True:
        name = click.prompt(
            "field name (empty to finish)", default="", show_default=False, err=True
        )
        if not name:
            return fields
        fields[name] = click.prompt(f"value of {name}", hide_input=True, err=True)


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a name given twice (which one would win is not
    for a secret to leave to chance)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise UsageError(f"--from-json gives field '{key}' twice")
        out[key] = value
    return out


def _scope(env: str | None, is_global: bool) -> str | None:
    if (env is None) == (not is_global):
        raise UsageError("give --env ENV or --global")
    return env


def _report(fmt: str, written: list[Any], lines: list[str], **report: object) -> None:
    """A credential or key command's outcome: `lines` for people (one per commit, or the
    one line that nothing was written), or `report` with the commits for scripts."""
    if fmt == "json":
        echo_json(
            {"changed": bool(written), **report, "commits": [written_json(w) for w in written]}
        )
    else:
        for line in lines:
            click.echo(line)
    for w in written:
        warn_if_unpushable(w)


@credentials.command("set")
@click.argument("name", shell_complete=credential_names)
@click.option(
    "--env", "env", metavar="ENV", shell_complete=environments, help="In ENV's own (scoped) file."
)
@click.option("--global", "is_global", is_flag=True, help="Shared by all environments.")
@click.option(
    "--from-json",
    type=click.File("r"),
    metavar="FILE",
    help="A JSON object of fields; - reads standard input. Default: prompt.",
)
@key_option
@format_option
@repo_option
def set_(
    name: str,
    env: str | None,
    is_global: bool,
    from_json: Any,
    age_keys: AgeKeys,
    fmt: str,
    repo: Path,
) -> None:
    """Add or replace credential NAME, encrypted through sops, as one commit.

    Changing an existing file needs that environment's key (sops re-encrypts it whole); a
    new file needs only the recipients in .sops.yaml.

    \b
    Examples:
      loomgit credentials set shop_api --env staging          (prompts for fields)
      loomgit credentials set chat --global --from-json fields.json --format json
    """
    from loomgit import credops
    from loomgit.workspace import Workspace

    scope = _scope(env, is_global)
    fields = _read_fields(from_json)
    with Workspace(repo) as ws:
        written = credops.set_credential(ws, name, scope, fields, credops.key_files(ws, age_keys))
    where = scope or "global"
    lines = [f"set {name} in {where} ({w.where()})" for w in written] or [
        f"{name} in {where} already has these values: nothing written"
    ]
    _report(fmt, written, lines, credential=name, scope=where)


@credentials.command("rm")
@click.argument("name", shell_complete=credential_names)
@click.option(
    "--env", "env", metavar="ENV", shell_complete=environments, help="From ENV's own (scoped) file."
)
@click.option("--global", "is_global", is_flag=True, help="From the global file.")
@key_option
@format_option
@repo_option
def rm(
    name: str, env: str | None, is_global: bool, age_keys: AgeKeys, fmt: str, repo: Path
) -> None:
    """Remove credential NAME from an environment's file or the global one.

    \b
    Example:
      loomgit credentials rm old_api --env staging --age-key-file staging=~/.keys/staging
    """
    from loomgit import credops
    from loomgit.workspace import Workspace

    scope = _scope(env, is_global)
    with Workspace(repo) as ws:
        written = credops.remove_credential(ws, name, scope, credops.key_files(ws, age_keys))
    where = scope or "global"
    lines = [f"removed {name} from {where} ({w.where()})" for w in written]
    _report(fmt, written, lines, credential=name, scope=where)


@credentials.command("copy")
@click.argument("name", shell_complete=credential_names)
@click.option(
    "--from",
    "from_env",
    required=True,
    metavar="ENV",
    shell_complete=environments,
    help="Where it resolves now.",
)
@click.option(
    "--to",
    "to_env",
    required=True,
    metavar="ENV",
    shell_complete=environments,
    help="Gets a scoped copy.",
)
@key_option
@format_option
@repo_option
def copy(name: str, from_env: str, to_env: str, age_keys: AgeKeys, fmt: str, repo: Path) -> None:
    """Copy credential NAME, as FROM resolves it, into TO's scoped file.

    \b
    Example:
      loomgit credentials copy crm_api --from staging --to production \\
        --age-key-file staging=~/.keys/staging
    """
    from loomgit import credops
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        w = credops.copy_credential(ws, name, from_env, to_env, credops.key_files(ws, age_keys))
    line = (
        f"copied {name} from {from_env} to {to_env} ({w.where()})"
        if w
        else f"{name} in {to_env} already has {from_env}'s values: nothing written"
    )
    report = {"credential": name, "from": from_env, "to": to_env}
    _report(fmt, [w] if w else [], [line], **report)


@cli.group()
def keys() -> None:
    """Age keys per environment: who can decrypt which credentials.

    \b
    Examples:
      loomgit keys list
      loomgit keys generate --env production --out ~/.config/loomgit/production.agekey
      loomgit keys add --env staging --recipient age1...
      loomgit keys rm --env staging --recipient age1... --age-key-file staging=ours.key
    """


@keys.command("list")
@click.option(
    "--env", "env", metavar="ENV", shell_complete=environments, help="Only this environment."
)
@format_option
@repo_option
def keys_list(env: str | None, fmt: str, repo: Path) -> None:
    """Each environment's age recipients, as .sops.yaml gives them; needs no key.

    \b
    Example:
      loomgit keys list --env production --format json
    """
    from loomgit import keys as keyring
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        only = ws.check_env(env) if env else None
        rows = [r for r in keyring.listing(ws) if only in (None, r.environment)]
    if fmt == "json":
        _echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r.environment}:")
        click.echo(f"  own credentials:    {', '.join(r.recipients) or 'no rule yet'}")
        click.echo(f"  global credentials: {', '.join(r.global_recipients) or 'no rule yet'}")


def _change_recipient(
    env: str, recipient: str, age_keys: AgeKeys, fmt: str, repo: Path, *, remove: bool
) -> None:
    from loomgit import credops
    from loomgit import keys as keyring
    from loomgit.workspace import Workspace

    change = keyring.remove_recipient if remove else keyring.add_recipient
    with Workspace(repo) as ws:
        written = change(ws, env, recipient, credops.key_files(ws, age_keys))
    did = f"removed {recipient} from" if remove else f"added {recipient} for"
    # Only adding can do nothing: when the key is there already.
    lines = [f"{did} {env} ({w.where()})" for w in written] or [
        f"{recipient} already decrypts {env}'s credentials: nothing written"
    ]
    report = {"environment": env, "recipient": recipient, "action": "remove" if remove else "add"}
    _report(fmt, written, lines, **report)
    if remove:
        click.echo(f"note: {keyring.ROTATE_HINT}", err=fmt == "json")


def recipient_options(func: Any) -> Any:
    """`--env ENV --recipient AGE_PUBLIC_KEY`, with the key and repository options."""
    func = key_option(format_option(repo_option(func)))
    func = click.option(
        "--recipient", required=True, metavar="AGE_PUBLIC_KEY", help="An age public key (age1…)."
    )(func)
    return click.option("--env", "env", required=True, metavar="ENV", shell_complete=environments)(
        func
    )


@keys.command("add")
@recipient_options
def keys_add(env: str, recipient: str, age_keys: AgeKeys, fmt: str, repo: Path) -> None:
    """Let RECIPIENT decrypt ENV's credentials (and the global ones); re-encrypts them.

    \b
    Example:
      loomgit keys add --env staging --recipient age1... --age-key-file staging=old.key
    """
    _change_recipient(env, recipient, age_keys, fmt, repo, remove=False)


@keys.command("generate")
@click.option("--env", "env", required=True, metavar="ENV", shell_complete=environments)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write the new identity (outside the repository).",
)
@key_option
@format_option
@repo_option
def keys_generate(env: str, out: Path, age_keys: AgeKeys, fmt: str, repo: Path) -> None:
    """Create an age identity for ENV (mode 0600) and add its public key.

    \b
    Example:
      loomgit keys generate --env production --out ~/.config/loomgit/production.agekey
    """
    from loomgit import credops
    from loomgit import keys as keyring
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        recipient, written = keyring.generate(ws, env, out, credops.key_files(ws, age_keys))
    lines = [
        f"wrote a new age identity for {env} to {out} (keep it secret)",
        f"public key: {recipient}",
        *(f"  {w.where()}" for w in written),
    ]
    report = {"environment": env, "recipient": recipient, "identity_file": str(out)}
    _report(fmt, written, lines, **report)


@keys.command("rm")
@recipient_options
def keys_rm(env: str, recipient: str, age_keys: AgeKeys, fmt: str, repo: Path) -> None:
    """Stop RECIPIENT decrypting ENV's credentials (and the global ones, unless another
    environment still has it); re-encrypts them with a new data key.

    ENV's only recipient is not removed: add the new key first. The removed key still
    decrypts the credentials in earlier commits, so give the secrets new values when
    its holder must lose them.

    \b
    Example:
      loomgit keys rm --env production --recipient age1... --age-key-file production=ours.key
    """
    _change_recipient(env, recipient, age_keys, fmt, repo, remove=True)

"""`loomgit serve`: the reconciler daemon."""

from __future__ import annotations

import os
from pathlib import Path

import click

from loomgit.cli import cli, repo_option
from loomgit.cli_credentials import key_option
from loomgit.cli_run import state_option
from loomgit.errors import UsageError

TOKENS_ENV = "LOOMGIT_API_TOKENS"


def _tokens(path: Path | None) -> tuple[str, ...]:
    found = [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        found += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(found)


@cli.command()
@click.option("--environments", metavar="A,B", help="Serve only these (default: all).")
@click.option("--interval", default="60s", show_default=True, metavar="DURATION")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--api-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Bearer tokens for the API, one per line (also: ${TOKENS_ENV}, comma-separated).",
)
@click.option(
    "--grace",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="How long running executions may go on after SIGTERM.",
)
@key_option
@state_option
@repo_option
def serve(
    environments: str | None,
    interval: str,
    host: str,
    port: int,
    api_token_file: Path | None,
    grace: str,
    age_keys: tuple[str, ...],
    state_dir: Path | None,
    repo: Path,
) -> None:
    """Run the reconciler daemon: serve each environment's active workflows from git.

    Reads the committed state of the repository, validates and decrypts each
    environment's credentials with its own key, and serves the webhooks of active
    workflows at /hooks/ENV/PATH and API triggers at
    POST /api/v1/workflows/NAME/executions. A commit that does not validate or decrypt
    changes nothing that runs; GET /api/v1/environments says why. SIGTERM lets running
    executions finish within --grace.

    \b
    Examples:
      loomgit serve --repo sample-repo --age-key-file production=prod.agekey
      loomgit serve --environments staging,production --port 9000 --interval 30s
    """
    import asyncio

    from loomgit.credops import key_files
    from loomgit.history import DB_NAME, History
    from loomgit.reconcile import Reconciler
    from loomgit.runner import parse_duration
    from loomgit.server import Daemon, Settings
    from loomgit.server import serve as run_server
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        keys = key_files(ws, age_keys)
        names = [ws.check_env(n.strip()) for n in environments.split(",")] if environments else None
    settings = Settings(
        interval=parse_duration(interval),
        grace=parse_duration(grace),
        tokens=_tokens(api_token_file),
    )
    reconciler = Reconciler(repo, keys, names)

    def ready(urls: list[str]) -> None:
        base = urls[0]
        click.echo(f"listening on {base}", err=True)
        for name in reconciler.names:
            st = reconciler.status[name]
            cond = st.conditions[0] if st.conditions else None
            state = f"{cond.reason}: {cond.message}" if cond else "not reconciled"
            click.echo(f"{name}: {state}", err=True)
            served = reconciler.served.get(name)
            for (method, path), wf in sorted((served.routes if served else {}).items()):
                click.echo(f"  {method} {base}/hooks/{name}/{path}  -> {wf}", err=True)

    with History(state_dir / DB_NAME if state_dir else None) as history:
        daemon = Daemon(reconciler, history, settings, on_ready=ready)
        asyncio.run(run_server(daemon, host, port))

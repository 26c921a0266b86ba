"""The error hierarchy: every failure a user can cause is a LoomgitError."""

from __future__ import annotations

import os

# The daemon's 401 when it was started without API tokens: no token the CLI sends helps.
NO_API_TOKENS = (
    "this daemon has no API tokens; start it with --api-token-file or LOOMGIT_API_TOKENS"
)


class LoomgitError(Exception):
    """Root of all user-facing errors; carries a plain sentence and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def explained(self) -> str:
        """The message with its hint, as one line for a status, a log or an annotation,
        where no second line is read."""
        return f"{self.message}; hint: {self.hint}" if self.hint else self.message


class UsageError(LoomgitError):
    """Bad arguments or an unusable environment (exit 2)."""

    exit_code = 2


class RepositoryError(LoomgitError):
    """The repository cannot be read: not git, no loomgit.yaml, unknown revision (exit 2)."""

    exit_code = 2


class GitError(RepositoryError):
    """A git command failed in a way the user has to look at."""


class DocumentError(LoomgitError):
    """A document could not be loaded; `problems` says where and why."""

    def __init__(self, message: str, problems: tuple[object, ...] = (), **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.problems = problems


def _stack(exc: BaseException) -> str:
    """Where `exc` and the exceptions it came from were raised: their types and stacks,
    not their messages, which may quote a secret (a decrypted value, a request body)."""
    import traceback

    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        stack = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"{type(current).__module__}.{type(current).__qualname__}\n{stack}")
        current = current.__cause__ or current.__context__
    return "\nwhich came from:\n".join(parts)


_report_folder: str | None = None  # a command's --state-dir, once it has read it


def report_to(folder: str | os.PathLike[str]) -> None:
    """Crash reports go to `folder` from now on: the state folder a command was given
    (`--state-dir`), beside its execution history, not the user's own."""
    global _report_folder
    _report_folder = os.fspath(folder)


def crash_report(exc: BaseException) -> str | None:
    """Writes where a bug happened to a file for a report; returns its path. Only the
    file has the stack: what a user is shown or logged is one line. The folder is the
    state folder: `--state-dir` (see `report_to`), else `$LOOMGIT_STATE_DIR`, else
    `$XDG_STATE_HOME/loomgit` or `~/.local/state/loomgit`. Imports what it needs here:
    every command imports this module at start-up."""
    import datetime
    import sys
    import tempfile
    from pathlib import Path

    from loomgit import __version__

    try:
        chosen = _report_folder or os.environ.get("LOOMGIT_STATE_DIR")
        if chosen:
            folder = Path(chosen)
        else:
            xdg = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
            folder = Path(xdg) / "loomgit"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        folder = Path(tempfile.gettempdir())
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"crash-{stamp}-{os.getpid()}-{type(exc).__name__}.log"
    try:
        # A traceback can quote what the failing command was handling: its user's alone.
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(opened, "w", encoding="utf-8") as fh:
            fh.write(f"loomgit {__version__}\nargv: {sys.argv[1:]}\n\n")
            fh.write(_stack(exc))
    except OSError:
        return None
    return str(path)

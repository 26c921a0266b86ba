"""The error hierarchy: every failure a user can cause is a LoomgitError."""

from __future__ import annotations


class LoomgitError(Exception):
    """Root of all user-facing errors; carries a plain sentence and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


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

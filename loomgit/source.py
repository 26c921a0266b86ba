"""`serve --remote`: the daemon's own clone of the source repository, fetched each cycle.

URLs and branch names reach git, so they are checked first (GitPython and git itself have
had command injections through URLs and options): only https://, ssh:// and local paths;
nothing starting with `-`, nothing with `::` (git's transport helpers) or `$`. Git runs
without prompts, with only the https, ssh and file protocols allowed, and never touches
submodules.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loomgit.errors import GitError, UsageError
from loomgit.vcs import git_env

_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
GIT_TIMEOUT = 300
PROTOCOLS = (
    *("-c", "protocol.allow=never"),
    *("-c", "protocol.https.allow=always"),
    *("-c", "protocol.ssh.allow=always"),
    *("-c", "protocol.file.allow=always"),
)
NO_SUBMODULES = ("-c", "submodule.recurse=false", "-c", "fetch.recurseSubmodules=false")


def check_url(url: str) -> str:
    """The URL as given, or a UsageError saying why git must not see it."""
    if (
        not url
        or url.startswith("-")
        or "::" in url
        or "$" in url
        or any(c in url for c in "\0\n\r")
    ):
        raise UsageError(f"'{url}' is not an accepted --remote (no leading '-', '::' or '$')")
    if url.startswith(("https://", "ssh://")):
        return url
    if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url):
        raise UsageError(
            f"'{url}' is not an accepted --remote",
            hint="use an https:// or ssh:// URL (ssh://git@host/owner/repo.git) or a local path",
        )
    path = Path(url)
    if not path.is_dir():
        raise UsageError(f"--remote {url}: no such folder")
    return str(path.resolve())


def check_branch(branch: str) -> str:
    if not _BRANCH.match(branch) or ".." in branch or branch.endswith((".lock", "/", ".")):
        raise UsageError(f"'{branch}' is not a valid --branch")
    return branch


@dataclass
class RemoteSource:
    """A clone at `path` of `url`, whose detached HEAD follows `branch`."""

    url: str
    branch: str
    path: Path

    def _git(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                ["git", *PROTOCOLS, *NO_SUBMODULES, *args],
                cwd=self.path,
                env=git_env(),
                capture_output=True,
                check=False,
                timeout=GIT_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} took longer than {GIT_TIMEOUT}s") from None
        except FileNotFoundError:
            raise GitError("git is not installed", hint="install git and try again") from None
        if proc.returncode != 0:
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = next((ln for ln in reversed(lines) if ln.startswith("fatal")), None)
            raise GitError(
                f"git {args[0]} failed: {detail or (lines[-1] if lines else proc.returncode)}"
            )
        return proc.stdout.decode().strip()

    def sync(self) -> str:
        """Fetches every branch and checks out `branch`; returns its commit."""
        if not (self.path / ".git").is_dir():
            self.path.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet")
            self._git("remote", "add", "origin", self.url)
        else:
            self._git("remote", "set-url", "origin", self.url)
        fetch = ("fetch", "--quiet", "--prune", "--no-tags", "--update-head-ok")
        self._git(*fetch, "--no-recurse-submodules", "origin", "+refs/heads/*:refs/heads/*")
        try:
            commit = self._git("rev-parse", "--verify", f"refs/heads/{self.branch}^{{commit}}")
        except GitError:
            raise GitError(f"{self.url} has no branch {self.branch}") from None
        self._git("checkout", "--quiet", "--force", "--detach", commit)
        return commit

"""`serve --remote`: the daemon's own clone of the source repository, fetched each cycle.

URLs and branch names reach git, so they are checked first (GitPython and git itself have
had command injections through URLs and options): only https://, ssh:// and local paths;
nothing starting with `-`, nothing with `::` (git's transport helpers) or `$`. Git runs
without prompts, with only the https, ssh and file protocols allowed, and never touches
submodules. A URL's user name and password (a token) are never shown: errors and logs
name the URL as `shown_url` gives it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.parse
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
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s]*)@")


def shown_url(text: str) -> str:
    """`text` with the credentials of every URL in it hidden: over https the whole user
    part (a token may stand alone as the user name), over ssh the password only."""

    def hide(m: re.Match[str]) -> str:
        scheme, info = m["scheme"], m["info"]
        if scheme.lower() == "ssh://" and ":" not in info:
            return m[0]
        user = info.split(":", 1)[0] if scheme.lower() == "ssh://" else ""
        return f"{scheme}{user}{':' if user else ''}***@"

    return _USERINFO.sub(hide, text)


# What the transport says when it cannot get in, and what the daemon's user can do.
_HINTS = (
    ("Host key verification failed", "add the git host's key to the daemon user's "
     "~/.ssh/known_hosts (ssh-keyscan HOST), or name a file of keys: "
     "GIT_SSH_COMMAND='ssh -o UserKnownHostsFile=FILE'"),
    ("Permission denied (publickey", "give ssh the deploy key: "
     "GIT_SSH_COMMAND='ssh -i KEY -o IdentitiesOnly=yes'"),
    ("could not read Username", "put a token in the URL (https://TOKEN@host/owner/repo.git; "
     "it is never shown) or set up a git credential helper for the daemon's user"),
)  # fmt: skip


def failure(stderr: str) -> tuple[str, str | None]:
    """What git's error output says failed, and a hint when it is a known way of not
    getting in: its `fatal:` line, after the transport's own reason when it gives one
    (ssh's "Host key verification failed." before git's "Could not read from remote
    repository.")."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    at = next((i for i in reversed(range(len(lines))) if lines[i].startswith("fatal")), None)
    if at is None:
        said = lines[-1] if lines else ""
    else:
        cause = next(
            (ln for ln in reversed(lines[:at]) if not ln.startswith(("hint:", "warning:"))), None
        )
        said = f"{cause} ({lines[at]})" if cause else lines[at]
    return said, next((hint for words, hint in _HINTS if words in said), None)


def check_url(url: str) -> str:
    """The URL as given, or a UsageError saying why git must not see it."""
    if (
        not url
        or url.startswith("-")
        or "::" in url
        or "$" in url
        or any(c in url for c in "\0\n\r")
    ):
        raise UsageError(
            f"'{shown_url(url)}' is not an accepted --remote (no leading '-', '::' or '$')"
        )
    if url.startswith(("https://", "ssh://")):
        return url
    if scp := re.match(r"^([\w.-]+@[\w.-]+):(/*)(.+)$", url):
        # the address git hosts show for cloning over ssh: git parses it by guesswork
        # (a ':' in a path, a host with a '/'), so only its URL form is taken
        host, rooted, path = scp[1], scp[2], scp[3]
        hint = f"write it as a URL: ssh://{host}/{path}"
        if not rooted and not path.startswith("~"):
            # git hosts take the path from their root; a plain ssh server from the
            # user's home folder, which the URL form spells `/~/`
            hint += (
                f" (on a plain ssh server, for a path in the home folder: ssh://{host}/~/{path})"
            )
        raise UsageError(f"'{shown_url(url)}' is not an accepted --remote", hint=hint)
    if "://" in url:
        raise UsageError(
            f"'{shown_url(url)}' is not an accepted --remote",
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
            said, hint = failure(proc.stderr.decode("utf-8", "replace"))
            said = self._hidden(said or f"exit {proc.returncode}")
            raise GitError(f"git {args[0]} failed: {said}", hint=hint)
        return proc.stdout.decode().strip()

    def _hidden(self, text: str) -> str:
        """`text` from git without this source's credentials, wherever they appear."""
        m = _USERINFO.match(self.url)
        if m is not None:
            user, _, password = m["info"].partition(":")
            secret = password or ("" if m["scheme"].lower() == "ssh://" else user)
            for form in {secret, urllib.parse.unquote(secret)}:
                if len(form) >= 4:  # as redaction elsewhere: shorter would garble the text
                    text = text.replace(form, "***")
        return shown_url(text)

    def checked_out(self) -> str | None:
        """The commit a sync before this one checked out, if there is one."""
        if not (self.path / ".git").is_dir():
            return None
        try:
            return self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}") or None
        except GitError:
            return None

    def sync(self) -> str:
        """Fetches every branch and checks out `branch`; returns its commit."""
        if not (self.path / ".git").is_dir():
            self.path.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet")
            self._git("remote", "add", "origin", self.url)
        else:
            self._git("remote", "set-url", "origin", self.url)
        with contextlib.suppress(OSError):  # git has written it; its mode is a courtesy
            (self.path / ".git" / "config").chmod(0o600)  # the URL may hold a token
        fetch = ("fetch", "--quiet", "--prune", "--no-tags", "--update-head-ok")
        self._git(*fetch, "--no-recurse-submodules", "origin", "+refs/heads/*:refs/heads/*")
        try:
            commit = self._git("rev-parse", "--verify", f"refs/heads/{self.branch}^{{commit}}")
        except GitError:
            raise GitError(f"{shown_url(self.url)} has no branch {self.branch}") from None
        self._git("checkout", "--quiet", "--force", "--detach", commit)
        return commit

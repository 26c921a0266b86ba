"""An open loomgit repository for commands that write: where each environment lives
(ref, commit, folder) in either layout, and reading its files at that commit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loomgit.documents import DocumentCache
from loomgit.errors import RepositoryError, UsageError
from loomgit.layout import ENV_FILE, VARS_FILE, WORKFLOWS_DIR, load_config, unknown_environment
from loomgit.models import Repository
from loomgit.vcs import Git, find_root
from loomgit.wording import closest


@dataclass(frozen=True)
class Location:
    """Where one environment is: the ref holding it, that ref's commit, and its folder."""

    env: str
    ref: str
    commit: str
    base: str  # "environments/<env>/" (after any monorepo prefix), or "" on its own branch
    checked_out: bool
    # Branch layout, in a clone that has the branch only as origin's: read from there
    # ("origin/env/production"); a commit creates the local branch.
    from_remote: str | None = None

    def path(self, rel: str) -> str:
        return self.base + rel

    def workflow(self, name: str) -> str:
        return self.path(f"{WORKFLOWS_DIR}/{name}.yaml")

    @property
    def env_file(self) -> str:
        return self.path(ENV_FILE)

    @property
    def vars_file(self) -> str:
        return self.path(VARS_FILE)

    @property
    def branch(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    @property
    def detached(self) -> bool:
        """Read from a detached HEAD (a CI job's checkout of a pull request, say): it can
        be read and reviewed, and written only onto a new branch (--branch)."""
        return self.ref == "HEAD"


class Workspace:
    """Opens the repository at `path`; use as a context manager. Its loomgit.yaml is read
    from the work tree, or with `rev`, as committed there."""

    def __init__(self, path: Path, rev: str | None = None) -> None:
        self.root = find_root(path, rev)
        self.git = Git(self.root.toplevel)
        self.cache = DocumentCache()
        try:
            commit = None if rev is None else self.git.resolve(rev)
            self.config: Repository = load_config(self.root, self.git, self.cache, commit)
        except BaseException:
            self.git.close()
            raise
        self._branch = self.git.current_branch()
        self._locations: dict[str, Location] = {}

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.git.close()

    def check_env(self, env: str) -> str:
        if env not in self.config.names:
            raise unknown_environment(env, self.config.names)
        return env

    def workflow_names(self, env: str) -> list[str]:
        """The names of `env`'s workflow files, sorted."""
        loc = self.location(env)
        folder = loc.path(WORKFLOWS_DIR) + "/"
        names = []
        for entry in self.git.ls_tree(loc.commit, folder):
            rel = entry.path.removeprefix(folder)
            if "/" not in rel and rel.endswith(".yaml"):
                names.append(rel.removesuffix(".yaml"))
        return sorted(names)

    def did_you_mean(self, env: str, name: str) -> str | None:
        """For a workflow `name` that `env` does not have: the hint naming the one of
        `env`'s workflows it is likely a typo of, if any."""
        close = closest(name, self.workflow_names(env))
        return f"did you mean {close}?" if close else None

    def missing_hint(self, env: str, name: str) -> str:
        """For a workflow `name` that `env` does not have at its commit: the likely typo,
        else how it gets there (committed in the first environment, promoted into the
        others)."""
        if (close := self.did_you_mean(env, name)) is not None:
            return close
        if env == self.config.first:
            return f"add {self.location(env).workflow(name)} and commit it"
        return f"promote it to {env} first: loomgit promote {name} --to {env}"

    def location(self, env: str) -> Location:
        """Where `env` is, as of when it was first asked for in this command."""
        found = self._locations.get(env)
        if found is None:
            found = self._locations[env] = self._locate(env)
        return found

    def _locate(self, env: str) -> Location:
        self.check_env(env)
        if self.config.layout == "directories":
            ref = "HEAD" if self._branch is None else f"refs/heads/{self._branch}"
            base = f"{self.root.prefix}environments/{env}/"
        else:
            ref = f"refs/heads/{self.config.branch_of(env)}"
            base = ""
        commit = self.git.ref(ref)
        from_remote = None
        if commit is None and self.config.layout == "branches":
            # A clone has only its checked-out branch of its own; validate reads the
            # others from origin too (layout.branch_tip), and so does every command.
            tracking = "origin/" + ref.removeprefix("refs/heads/")
            commit = self.git.ref(f"refs/remotes/{tracking}")
            from_remote = tracking if commit else None
        if commit is None:
            raise RepositoryError(
                f"{ref.removeprefix('refs/heads/')} has no commits",
                hint="run `loomgit init` or create the branch",
            )
        checked_out = ref == "HEAD" or ref == f"refs/heads/{self._branch}"
        return Location(env, ref, commit, base, checked_out, from_remote)

    def writable(self, loc: Location) -> None:
        """Refuses a commit onto `loc`'s branch when there is none: HEAD is detached."""
        if loc.detached:
            raise UsageError(
                "HEAD is detached; loomgit commits onto a branch",
                hint="check out a branch first (git switch main); promote, activate, "
                "rollback and restore can write onto a new one with --branch NAME",
            )

    def behind_origin(self, env: str) -> str | None:
        """Why `env`'s branch may be out of date: origin's copy of it has commits it
        lacks (fetched, not pulled). A commit onto it would then not push."""
        loc = self.location(env)
        if loc.from_remote is not None or loc.detached:
            return None
        return self.branch_behind(loc.branch, loc.commit)

    def branch_behind(self, branch: str, commit: str) -> str | None:
        """Why `branch`, at `commit`, may be out of date: origin's copy has commits it lacks."""
        tracking = f"origin/{branch}"
        if self.git.ref(f"refs/remotes/{tracking}") is None:
            return None
        count = int(self.git.run("rev-list", "--count", f"{commit}..refs/remotes/{tracking}"))
        if not count:
            return None
        return f"{branch} is {count} commit{'s' * (count > 1)} behind {tracking}"

    def previous(self, env: str) -> str | None:
        index = self.config.index(self.check_env(env))
        return self.config.names[index - 1] if index else None

    def next(self, env: str) -> str | None:
        index = self.config.index(self.check_env(env))
        names = self.config.names
        return names[index + 1] if index + 1 < len(names) else None

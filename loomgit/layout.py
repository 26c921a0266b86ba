"""Layouts: which files make up each environment, read from a commit or the work tree.

Both layouts produce the same Snapshot, so nothing above this module knows whether an
environment is a folder (`environments/<env>/`) or a branch (`env/<env>`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loomgit.credentials import (
    GLOBAL_FILE_BRANCHES,
    GLOBAL_FILE_DIRECTORIES,
    PLAINTEXT_NAME,
    SCOPED_FILE,
    SOPS_CONFIG,
)
from loomgit.documents import DocumentCache, blob_id
from loomgit.errors import RepositoryError, UsageError
from loomgit.models import EnvironmentState, Repository
from loomgit.problems import Problem, headline
from loomgit.vcs import CONFIG_FILE, MODE_SYMLINK, Git, Root
from loomgit.wording import closest

ENV_FILE = "environment.yaml"
VARS_FILE = "variables.yaml"
WORKFLOWS_DIR = "workflows"
WORKFLOW_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class FileRef:
    path: str  # as shown to people: relative to the git top level, or `branch:path`
    rel: str  # relative to the environment's folder or branch root
    blob: str
    mode: str = "100644"
    target: str | None = None  # where a symbolic link points


@dataclass
class EnvFiles:
    """The files of one environment in one snapshot."""

    name: str
    workflows: list[FileRef] = field(default_factory=list)
    environment: FileRef | None = None
    variables: FileRef | None = None
    problems: list[Problem] = field(default_factory=list)
    commit: str | None = None  # where its history starts (None: no commits yet)
    base: str = ""  # the environment's folder within the tree at `commit`
    credentials: FileRef | None = None  # this environment's scoped credentials
    global_credentials: FileRef | None = None  # the shared file as this environment sees it
    sops_config: FileRef | None = None  # the .sops.yaml that applies
    secret_like: list[FileRef] = field(default_factory=list)  # other credentials*/secrets*

    def refs(self) -> list[FileRef]:
        optional = [
            self.environment,
            self.variables,
            self.credentials,
            self.global_credentials,
            self.sops_config,
        ]
        return [*self.workflows, *(r for r in optional if r is not None), *self.secret_like]


class Blobs(Mapping[str, bytes]):
    """A snapshot's file contents by blob id, read from git in one batch when the first
    one is needed. Those `later` says can wait (workflows parsed already) are read only
    if one of them is asked for, so a cycle that finds everything parsed reads only what
    changed."""

    def __init__(
        self,
        git: Git,
        loaded: dict[str, bytes],
        wanted: Iterable[str],
        later: Callable[[str], bool] = lambda blob: False,
    ) -> None:
        self._git = git
        self._loaded = loaded
        self._wanted = dict.fromkeys([*loaded, *wanted])
        todo = [b for b in self._wanted if b not in loaded]
        self._waiting = {b for b in todo if later(b)}
        self._pending = set(todo) - self._waiting

    def __getitem__(self, blob: str) -> bytes:
        found = self._loaded.get(blob)
        if found is not None:
            return found
        if blob not in self._wanted:
            raise KeyError(blob)
        batch = self._pending
        if blob not in batch:
            batch, self._waiting = batch | self._waiting, set()
        self._pending = set()
        self._loaded.update(self._git.read_blobs(batch))
        return self._loaded[blob]

    def __iter__(self) -> Iterator[str]:
        return iter(self._wanted)

    def __len__(self) -> int:
        return len(self._wanted)

    def __contains__(self, blob: object) -> bool:
        return blob in self._wanted


@dataclass
class Snapshot:
    """Every environment as one reading of the repository sees it."""

    root: Root
    config: Repository
    envs: dict[str, EnvFiles]
    data: Mapping[str, bytes]
    git: Git
    source: str  # "work tree" or a commit id
    _history: dict[str, dict[str, int]] = field(default_factory=dict)

    def bytes_of(self, ref: FileRef) -> bytes:
        return self.data[ref.blob]

    def ever_held(self, env: str, workflow: str, version: int, cache: DocumentCache) -> bool:
        """Did `env` ever record `workflow` at `version` or later (read from its history)?"""
        return self._highest_versions(env, cache).get(workflow, 0) >= version

    def _highest_versions(self, env: str, cache: DocumentCache) -> dict[str, int]:
        found = self._history.get(env)
        if found is None:
            files = self.envs[env]
            found = {}
            if files.commit is not None:
                path = files.base + ENV_FILE
                log = self.git.path_log(files.commit, path)
                blobs = [blob for _, blob in log if blob]
                found = cache.highest_versions(f"{env}:{path}", blobs, self.git.read_blobs)
            self._history[env] = found
        return found


def _classify(env: EnvFiles, entries: list[FileRef], show: Callable[[str], str]) -> None:
    """Sorts an environment's files into workflows, environment.yaml and variables.yaml."""
    for ref in entries:
        rel = ref.rel
        ours = _is_env_file(rel)
        if ours and ref.mode == MODE_SYMLINK:
            where = f" (it points to {ref.target})" if ref.target else ""
            env.problems.append(
                Problem(
                    "LG110",
                    f"symbolic links are not allowed here{where}; commit the file itself",
                    ref.path,
                )
            )
            continue
        if rel == ENV_FILE:
            env.environment = ref
        elif rel == SCOPED_FILE:
            env.credentials = ref
        elif rel == GLOBAL_FILE_BRANCHES:
            env.global_credentials = ref
        elif rel == SOPS_CONFIG:
            env.sops_config = ref
        elif PLAINTEXT_NAME.search(rel) and "/" not in rel:
            env.secret_like.append(ref)
        elif rel == VARS_FILE:
            env.variables = ref
        elif rel == WORKFLOWS_DIR:
            env.problems.append(
                Problem(
                    "LG111",
                    f"'{WORKFLOWS_DIR}' is a file; it must be a folder of workflow files",
                    ref.path,
                )
            )
        elif rel.startswith((ENV_FILE + "/", VARS_FILE + "/")):
            env.problems.append(
                Problem(
                    "LG111",
                    f"'{rel.split('/')[0]}' is a folder; it must be a file",
                    show(rel.split("/")[0]),
                )
            )
        elif rel.startswith(WORKFLOWS_DIR + "/"):
            name = rel[len(WORKFLOWS_DIR) + 1 :]
            if "/" not in name and name.endswith(WORKFLOW_SUFFIXES):
                env.workflows.append(ref)
    env.problems[:] = list(dict.fromkeys(env.problems))


def _prefixed(prefix: str, rel: str) -> str:
    return prefix + rel


# -- reading a commit ------------------------------------------------------------------


def _tree_files(git: Git, commit: str, base: str, show: Callable[[str], str]) -> list[FileRef]:
    entries = [e for e in git.ls_tree(commit, base) if e.kind == "blob"]
    out = []
    symlinks = [e.sha for e in entries if e.mode == MODE_SYMLINK]
    targets = git.read_blobs(symlinks) if symlinks else {}
    for e in entries:
        if not e.path.startswith(base):
            continue
        rel = e.path[len(base) :]
        target = targets[e.sha].decode("utf-8", "replace") if e.sha in targets else None
        out.append(FileRef(show(rel), rel, e.sha, e.mode, target))
    return out


# -- reading the work tree -------------------------------------------------------------


def _is_env_file(rel: str) -> bool:
    """Files loomgit reads in an environment's folder or at the root of its branch."""
    if rel in (ENV_FILE, VARS_FILE, SCOPED_FILE, GLOBAL_FILE_BRANCHES, SOPS_CONFIG):
        return True
    if "/" not in rel and PLAINTEXT_NAME.search(rel):
        return True
    return rel == WORKFLOWS_DIR or rel.startswith(WORKFLOWS_DIR + "/")


def _disk_files(
    folder: Path,
    show: Callable[[str], str],
    data: dict[str, bytes],
    wanted: Callable[[str], bool] = lambda rel: True,
) -> list[FileRef]:
    out: list[FileRef] = []
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for name in [*filenames, *[d for d in dirnames if (here / d).is_symlink()]]:
            full = here / name
            rel = full.relative_to(folder).as_posix()
            if not wanted(rel):
                continue
            if full.is_symlink():
                out.append(FileRef(show(rel), rel, "", MODE_SYMLINK, os.readlink(full)))
                continue
            try:
                content = full.read_bytes()
            except OSError as exc:
                raise RepositoryError(f"cannot read {show(rel)}: {exc.strerror}") from None
            blob = blob_id(content)
            data[blob] = content
            out.append(FileRef(show(rel), rel, blob))
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and wanted((here / d).relative_to(folder).as_posix())
        ]
    return out


# -- configuration ---------------------------------------------------------------------


def load_config(root: Root, git: Git, cache: DocumentCache, commit: str | None) -> Repository:
    """Reads and validates loomgit.yaml; a broken one stops everything (exit 2)."""
    path = root.prefix + CONFIG_FILE
    if commit is None:
        try:
            data = (root.toplevel / path).read_bytes()
        except OSError as exc:
            raise RepositoryError(f"cannot read {path}: {exc.strerror}") from None
    else:
        entries = [e for e in git.ls_tree(commit, path) if e.path == path]
        if not entries:
            raise RepositoryError(f"{path} does not exist at {commit[:12]}")
        data = git.read_blobs([entries[0].sha])[entries[0].sha]
    parsed = cache.model(Repository, blob_id(data), data)
    if parsed.model is None:
        found, more = headline(parsed.problems)
        first = found.at(path)
        raise RepositoryError(
            first.render().replace(f"[{first.code}]", "[LG500]") + more,
            hint="fix loomgit.yaml first; nothing else can be read without it",
        )
    return parsed.model


# -- snapshots -------------------------------------------------------------------------


def _directories(
    root: Root, git: Git, config: Repository, commit: str | None, head: str | None
) -> tuple[dict[str, EnvFiles], dict[str, bytes]]:
    data: dict[str, bytes] = {}
    base = root.prefix + "environments/"

    def show(rel: str) -> str:
        return base + rel

    if commit is None:
        files = _disk_files(root.toplevel / base, show, data)
    else:
        files = _tree_files(git, commit, base, show)
    grouped: dict[str, list[FileRef]] = {}
    for ref in files:
        env_name, _, rest = ref.rel.partition("/")
        if rest:
            grouped.setdefault(env_name, []).append(
                FileRef(ref.path, rest, ref.blob, ref.mode, ref.target)
            )
    envs: dict[str, EnvFiles] = {}
    for name in config.names:
        env = EnvFiles(name, commit=commit or head, base=f"{base}{name}/")
        if name not in grouped:
            env.problems.append(
                Problem("LG502", f"environment '{name}' has no folder {base}{name}/", show(name))
            )
        else:
            _classify(env, grouped[name], functools.partial(_prefixed, f"{base}{name}/"))
        envs[name] = env
    shared = _root_files(root, git, commit, data)
    for env in envs.values():
        env.sops_config = shared.get(SOPS_CONFIG)
        env.global_credentials = shared.get(GLOBAL_FILE_DIRECTORIES)
    envs[config.first].secret_like.extend(
        ref
        for rel, ref in sorted(shared.items())
        if rel not in (SOPS_CONFIG, GLOBAL_FILE_DIRECTORIES) and PLAINTEXT_NAME.search(rel)
    )
    extra = sorted(set(grouped) - set(config.names))
    for name in extra:
        envs[config.first].problems.append(
            Problem(
                "LG501",
                f"folder environments/{name}/ is not an environment listed in loomgit.yaml",
                show(name),
            )
        )
    return envs, data


def _root_files(
    root: Root, git: Git, commit: str | None, data: dict[str, bytes]
) -> dict[str, FileRef]:
    """Files directly in the loomgit root that concern credentials (directory layout)."""

    def wanted(rel: str) -> bool:
        return "/" not in rel and (rel == SOPS_CONFIG or bool(PLAINTEXT_NAME.search(rel)))

    out: dict[str, FileRef] = {}
    if commit is None:
        folder = root.toplevel / root.prefix if root.prefix else root.toplevel
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink() and wanted(entry.name):
                content = entry.read_bytes()
                blob = blob_id(content)
                data[blob] = content
                out[entry.name] = FileRef(root.prefix + entry.name, entry.name, blob)
        return out
    listing = git.run("ls-tree", "-z", commit, "--", root.prefix or ".")
    for record in listing.split(b"\0"):
        meta, _, raw = record.partition(b"\t")
        if not record or b" blob " not in meta:
            continue
        name = raw.decode("utf-8", "surrogateescape").rsplit("/", 1)[-1]
        if wanted(name):
            sha = meta.decode().split(" ")[2]
            out[name] = FileRef(root.prefix + name, name, sha)
    return out


def branch_tip(git: Git, config: Repository, name: str) -> str | None:
    """Branch layout: the commit environment `name`'s branch is at, here or on origin."""
    branch = config.branch_of(name)
    return git.ref(f"refs/heads/{branch}") or git.ref(f"refs/remotes/origin/{branch}")


def _which_env(
    config: Repository,
    cache: DocumentCache,
    named: str | None,
    env_file: tuple[str, bytes] | None,
    branch: str | None,
) -> str | None:
    if named:
        return named
    if env_file is not None:
        state = cache.model(EnvironmentState, *env_file).model
        if state and state.environment in config.names:
            return state.environment
    for env in config.names:
        if branch and config.branch_of(env) == branch:
            return env
    return None


def _branches(
    root: Root,
    git: Git,
    config: Repository,
    cache: DocumentCache,
    commit: str | None,
    rev: str | None,
    env_hint: str | None,
    head: str | None,
) -> tuple[dict[str, EnvFiles], dict[str, bytes]]:
    data: dict[str, bytes] = {}
    if commit is None:
        local = _disk_files(root.toplevel, lambda rel: rel, data, _is_env_file)
        branch = git.current_branch()
    else:
        local = _tree_files(git, commit, "", lambda rel: rel)
        branch = rev
    env_ref = next((f for f in local if f.rel == ENV_FILE and f.mode != MODE_SYMLINK), None)
    if env_ref is not None and env_ref.blob not in data:
        data.update(git.read_blobs([env_ref.blob]))
    current = _which_env(
        config,
        cache,
        env_hint if commit is not None else None,
        (env_ref.blob, data[env_ref.blob]) if env_ref else None,
        branch,
    )
    if commit is not None and current is None:
        raise UsageError(
            f"cannot tell which environment '{rev}' holds",
            hint="pass --env NAME, or add 'environment: NAME' to its environment.yaml",
        )
    envs: dict[str, EnvFiles] = {}
    for name in config.names:
        env = EnvFiles(name)
        if name == current:
            env.commit = commit or head
            _classify(env, local, lambda rel: rel)
        else:
            tip = branch_tip(git, config, name)
            branch_name = config.branch_of(name)
            if tip is None:
                env.problems.append(
                    Problem(
                        "LG502", f"environment '{name}' has no branch '{branch_name}'", branch_name
                    )
                )
            else:
                env.commit = tip

                def show(rel: str, b: str = branch_name) -> str:
                    return f"{b}:{rel}"

                _classify(env, _tree_files(git, tip, "", show), show)
        envs[name] = env
    return envs, data


def snapshot(
    root: Root, git: Git, cache: DocumentCache, rev: str | None = None, env_hint: str | None = None
) -> Snapshot:
    """Reads every environment from `rev` (a commit) or, without it, from the work tree."""
    commit = git.resolve(rev) if rev is not None else None
    head = git.ref("HEAD")
    config = load_config(root, git, cache, commit)
    if env_hint is not None and env_hint not in config.names:
        raise unknown_environment(env_hint, config.names)
    if config.layout == "directories":
        envs, data = _directories(root, git, config, commit, head)
    else:
        envs, data = _branches(root, git, config, cache, commit, rev, env_hint, head)
    wanted = [ref.blob for env in envs.values() for ref in env.refs() if ref.blob]
    blobs = Blobs(git, data, wanted, cache.has_workflow)
    return Snapshot(root, config, envs, blobs, git, commit or "work tree")


def unknown_environment(env: str, names: list[str]) -> UsageError:
    """The error for an environment loomgit.yaml does not list, naming the one meant."""
    close = closest(env, names)
    listed = f"environments: {', '.join(names)}"
    return UsageError(
        f"unknown environment '{env}'", hint=f"did you mean {close}? {listed}" if close else listed
    )

"""A loomgit repository of either layout, driven through the real CLI, for scenario tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import HELLO, VARIABLES, AgeKey, Result, commit_all, git, sops_config

from loomgit import envstate, scaffold
from loomgit.models import WorkflowState
from loomgit.vcs import Git

ENVS = ["development", "staging", "production"]


@dataclass
class Pipeline:
    path: Path
    layout: str
    cli: Callable[..., Result]

    @classmethod
    def create(
        cls, tmp: Path, layout: str, cli: Callable[..., Result], key: AgeKey, shared: bytes
    ) -> Pipeline:
        p = cls(tmp / "flows", layout, cli)
        scaffold.init(p.path, layout, ENVS)
        config = sops_config(key.recipient, ENVS, layout).encode()
        if layout == "directories":
            (p.path / ".sops.yaml").write_bytes(config)
            (p.path / "credentials.sops.yaml").write_bytes(shared)
        for env in ENVS:
            files = {"variables.yaml": VARIABLES.encode()}
            if layout == "branches":
                files.update({".sops.yaml": config, "global-credentials.sops.yaml": shared})
            p.commit_on(env, files, f"variables for {env}")
        p.edit("hello", HELLO)
        return p

    def run(self, *args: str) -> Result:
        return self.cli(*args, "--repo", self.path)

    # -- where things are --------------------------------------------------------------

    def ref(self, env: str) -> str:
        return "main" if self.layout == "directories" else f"env/{env}"

    def rel(self, env: str, rel: str) -> str:
        return f"environments/{env}/{rel}" if self.layout == "directories" else rel

    def file(self, env: str, name: str) -> bytes | None:
        with Git(self.path) as g:
            return g.blob_at(g.resolve(self.ref(env)), self.rel(env, f"workflows/{name}.yaml"))

    def record(self, env: str, name: str) -> WorkflowState | None:
        with Git(self.path) as g:
            data = g.blob_at(g.resolve(self.ref(env)), self.rel(env, "environment.yaml"))
        return envstate.record(data, name)

    def message(self, env: str) -> str:
        return git(self.path, "log", "-1", "--format=%B", self.ref(env))

    def tip(self, env: str) -> str:
        return git(self.path, "rev-parse", self.ref(env))

    # -- changing things -----------------------------------------------------------------

    def commit_on(self, env: str, files: dict[str, bytes | None], message: str) -> str:
        """Commits files into an environment's folder or branch (as a person would); None
        deletes the file."""
        if self.layout == "directories" or env == ENVS[0]:
            for rel, data in files.items():
                at_root = self.layout == "directories" and rel.startswith(".sops")
                target = self.path / (rel if at_root else self.rel(env, rel))
                if data is None:
                    target.unlink()
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            return commit_all(self.path, message)
        with Git(self.path) as g:
            ref = f"refs/heads/env/{env}"
            return g.commit_files(ref, g.resolve(ref), dict(files), message)

    def edit(self, name: str, text: str) -> str:
        return self.commit_on(ENVS[0], {f"workflows/{name}.yaml": text.encode()}, f"edit {name}")

    def snapshot(self) -> tuple[str, str, str]:
        """Refs, status and every work-tree file: to prove a refusal changed nothing."""
        refs = git(self.path, "for-each-ref", "--format=%(refname) %(objectname)")
        status = git(self.path, "status", "--porcelain", "--untracked-files=all")
        digest = hashlib.sha256()
        for f in sorted(self.path.rglob("*")):
            if ".git" not in f.parts and f.is_file():
                digest.update(str(f).encode() + f.read_bytes())
        return refs, status, digest.hexdigest()

"""What an environment runs, read from a snapshot: each workflow's definition, version
and activation, the environment's variables, and its credentials decrypted with its key.
The CLI's `run` and the daemon build their deployments here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from loomgit import credentials, sops
from loomgit.documents import DocumentCache
from loomgit.errors import LoomgitError, UsageError
from loomgit.layout import FileRef, Snapshot
from loomgit.models.state import EnvironmentState, Variables, WorkflowState
from loomgit.problems import headline
from loomgit.redact import Redactor, secret_values
from loomgit.runtime import Deployment
from loomgit.validate import check
from loomgit.wording import closest


class NotRunnable(LoomgitError):
    """The workflow cannot run as it stands (it does not validate, or is not there)."""


@dataclass(frozen=True)
class Plan:
    """One workflow of one environment, ready to have its credentials decrypted."""

    deployment: Deployment  # without credentials yet
    path: str
    state: WorkflowState


@dataclass
class Decrypted:
    """What one environment's credentials decrypted to, kept for one cycle: each file once,
    and each set of credential names once, so the deployments that declare the same set
    share its values and its redactor."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # by path
    sets: dict[tuple[str, ...], tuple[dict[str, Any], Redactor]] = field(default_factory=dict)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def plan(
    snap: Snapshot, cache: DocumentCache, env: str, name: str, *, ref: FileRef | None = None
) -> Plan:
    """The deployment of workflow `name` in `env`; refuses one that does not validate.
    Given its file `ref`, the caller has validated the whole environment already."""
    files = snap.envs[env]
    validated = ref is not None
    if ref is None:
        ref = next(
            (r for r in files.workflows if r.rel.rsplit("/", 1)[-1].split(".")[0] == name), None
        )
    if ref is None:
        known = sorted(r.rel.rsplit("/", 1)[-1].split(".")[0] for r in files.workflows)
        close = closest(name, known)
        hint = f"workflows in {env}: {', '.join(known)}" if known else None
        raise UsageError(
            f"there is no workflow '{name}' in {env}",
            hint=f"did you mean {close}?" if close else hint,
        )
    mine = {ref.path, *(r.path for r in (files.variables, files.environment) if r)}
    blocking = (
        []
        if validated
        else [
            p
            for p in check(snap, cache, env)
            if p.severity == "error" and (p.path in mine or not p.path)
        ]
    )
    parsed = cache.workflow(ref.blob, functools.partial(snap.bytes_of, ref))
    if blocking or parsed.model is None:
        first, more = headline(blocking) if blocking else (None, "")
        raise NotRunnable(
            f"{name} does not validate: {first.render() if first else ref.path}{more}",
            hint=f"run `loomgit validate --env {env}` for the full list",
        )
    variables: dict[str, Any] = {}
    if files.variables is not None:
        vars_model = cache.model(Variables, files.variables.blob, snap.bytes_of(files.variables))
        # The environment's one mapping, shared by its deployments (read-only to them).
        variables = vars_model.model.variables if vars_model.model else {}
    state = WorkflowState()
    if files.environment is not None:
        doc = cache.model(
            EnvironmentState, files.environment.blob, snap.bytes_of(files.environment)
        )
        if doc.model is not None:
            state = doc.model.workflows.get(name, state)
    dep = Deployment(
        workflow=parsed.model,
        environment=env,
        version=state.version,
        digest=parsed.digest,
        variables=variables,
    )
    return Plan(dep, ref.path, state)


def with_credentials(
    snap: Snapshot,
    found: Plan,
    key_file: Path | None,
    decrypted: Decrypted | None = None,
) -> Deployment:
    """The deployment with the credentials it declares, decrypted with its environment's
    key. `decrypted` keeps what was decrypted across calls for the same environment."""
    dep = found.deployment
    wanted = tuple(dep.workflow.spec.credentials)
    if not wanted:
        return dep
    decrypted = Decrypted() if decrypted is None else decrypted
    known = decrypted.sets.get(wanted)
    if known is None:
        values = _credentials(snap, dep.environment, wanted, key_file, decrypted.files)
        known = decrypted.sets[wanted] = (values, Redactor(secret_values(values)))
    return Deployment(
        workflow=dep.workflow,
        environment=dep.environment,
        version=dep.version,
        digest=dep.digest,
        variables=dep.variables,
        credentials=known[0],
        redactor=known[1],
    )


def _credentials(
    snap: Snapshot,
    env: str,
    wanted: tuple[str, ...],
    key_file: Path | None,
    files: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    scoped_ref, shared_ref = snap.envs[env].credentials, snap.envs[env].global_credentials
    scoped = credentials.read(snap.bytes_of(scoped_ref)) if scoped_ref else None
    shared = credentials.read(snap.bytes_of(shared_ref)) if shared_ref else None
    scoped_only = frozenset(snap.config.scoped_only)
    values: dict[str, Any] = {}
    for name in wanted:
        where = credentials.resolve(name, scoped, shared, scoped_only)
        if where is None:
            raise NotRunnable(
                f"credential {name} does not resolve in {env}",
                hint=f"loomgit credentials set {name} --env {env}",
            )
        ref = scoped_ref if where[0] == "scoped" else shared_ref
        assert ref is not None  # resolve() found the name in this file
        if ref.path not in files:
            files[ref.path] = sops.decrypt(snap.bytes_of(ref), key_file, what=ref.path, env=env)
        values[name] = _reveal(files[ref.path].get(name, {}))
    return values

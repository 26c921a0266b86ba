"""Credential and key commands: list (no key), set, remove and copy (through sops), and
age recipients in `.sops.yaml`. Every change is one commit per branch it touches, and no
value ever reaches a commit message, an error or an output."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomgit import credentials, sops
from loomgit.agekeys import KEY_DIR_ENV, KEY_SUFFIX, AgeKeys, key_env_var
from loomgit.credentials import (
    GLOBAL_FILE_BRANCHES,
    GLOBAL_FILE_DIRECTORIES,
    SCOPED_FILE,
    SOPS_CONFIG,
    CredentialFile,
)
from loomgit.errors import UsageError
from loomgit.models.base import IDENTIFIER
from loomgit.promotion import Refused, Written, write
from loomgit.workspace import Location, Workspace


def key_files(ws: Workspace, given: AgeKeys) -> dict[str, Path]:
    """Age identity files per environment, from the LOOMGIT_AGE_KEY_FILE_<ENV> variables,
    then the key folder's ENV.agekey files, then `--age-key-file ENV=PATH` options: each
    wins over those before it. Files others can read are refused."""
    found: dict[str, Path] = {}
    for env in ws.config.names:
        value = os.environ.get(key_env_var(env))
        if value:
            found[env] = Path(value)
    if given.folder is not None:
        folder = given.folder.expanduser()
        if not folder.is_dir():
            where = f"--age-key-dir or ${KEY_DIR_ENV}"
            raise UsageError(f"the age key folder {given.folder} ({where}) does not exist")
        for env in ws.config.names:
            key = folder / f"{env}{KEY_SUFFIX}"
            if key.is_file():
                found[env] = key
    for item in given.files:
        env, sep, path = item.partition("=")
        if not sep or not env or not path:
            raise UsageError(f"--age-key-file takes ENV=PATH, not '{item}'")
        found[ws.check_env(env)] = Path(path).expanduser()
    return {env: sops.check_key_file(path, env) for env, path in found.items()}


@dataclass(frozen=True)
class Where:
    """One credentials file: the branch that holds it and its path there."""

    location: Location
    path: str  # path in the tree
    rule_path: str  # path as .sops.yaml rules see it (relative to the loomgit root)
    label: str  # "staging" or "global"

    @property
    def shown(self) -> str:
        """The file as messages name it: with its branch in the branch layout, where
        every environment branch has a file of that name (`env/live:credentials.sops.yaml`,
        as the daemon and `git show` name it)."""
        if self.location.base:  # the directories layout: the path says it all
            return self.path
        branch = self.location.from_remote or self.location.ref.removeprefix("refs/heads/")
        return f"{branch}:{self.path}"


def scoped_file(ws: Workspace, env: str) -> Where:
    loc = ws.location(env)
    path = loc.path(SCOPED_FILE)
    rule_path = path[len(ws.root.prefix) :] if ws.config.layout == "directories" else path
    return Where(loc, path, rule_path, env)


def global_files(ws: Workspace) -> list[Where]:
    """The global file: once on the branch (directories), or on every environment branch."""
    if ws.config.layout == "directories":
        loc = ws.location(ws.config.first)
        return [
            Where(loc, ws.root.prefix + GLOBAL_FILE_DIRECTORIES, GLOBAL_FILE_DIRECTORIES, "global")
        ]
    return [
        Where(ws.location(e), GLOBAL_FILE_BRANCHES, GLOBAL_FILE_BRANCHES, "global")
        for e in ws.config.names
    ]


def sops_config_path(ws: Workspace) -> str:
    """`.sops.yaml` in the tree: at the loomgit root, or at the top of each branch."""
    return ws.root.prefix + SOPS_CONFIG if ws.config.layout == "directories" else SOPS_CONFIG


def recipients_under(ws: Workspace, config: bytes | None, where: Where) -> tuple[str, ...]:
    """The recipients sops would encrypt `where` for under `config`: none without a rule of
    its own (an environment's file covered only by the global rule has none)."""
    shared = None if where.label == "global" else global_files(ws)[0].rule_path
    return credentials.read_config(config).recipients_for(where.rule_path, shared) or ()


def recipients(ws: Workspace, where: Where) -> list[str]:
    data = ws.git.blob_at(where.location.commit, sops_config_path(ws))
    found = recipients_under(ws, data, where)
    if not found:
        env = "ENV" if where.label == "global" else where.label
        raise Refused(
            f"{where.rule_path} has no creation rule of its own in .sops.yaml",
            hint=f"add a key first: loomgit keys generate --env {env} --out PATH",
        )
    return list(found)


@dataclass(frozen=True)
class Listed:
    name: str
    scope: str  # an environment's name, or "global"
    fields: tuple[str, ...]
    resolves_in: tuple[str, ...]


def listing(ws: Workspace, env: str | None = None) -> list[Listed]:
    """Every credential with its fields, scope and the environments it resolves in."""
    shared_where = global_files(ws)[0]
    shared_data = ws.git.blob_at(shared_where.location.commit, shared_where.path)
    shared = credentials.read(shared_data) if shared_data else None
    scoped: dict[str, CredentialFile | None] = {}
    for e in ws.config.names:
        where = scoped_file(ws, e)
        data = ws.git.blob_at(where.location.commit, where.path)
        scoped[e] = credentials.read(data) if data else None
    only = frozenset(ws.config.scoped_only)
    rows = []
    sources: list[tuple[str, CredentialFile | None]] = [("global", shared)]
    sources += list(scoped.items())
    for scope, file in sources:
        if file is None or (env and scope not in (env, "global")):
            continue
        for name, fields in sorted(file.fields.items()):
            # A global credential is used where no scoped one shadows it (and it is not
            # scoped_only); a scoped one only in its own environment.
            where_ok = tuple(
                e
                for e in ws.config.names
                if (found := credentials.resolve(name, scoped[e], shared, only)) is not None
                and (found[0] == "global" if scope == "global" else e == scope)
            )
            rows.append(Listed(name, scope, fields, where_ok))
    return rows


def _fields(fields: dict[str, Any]) -> dict[str, str]:
    if not fields:
        raise UsageError("a credential needs at least one field")
    out = {}
    for key, value in fields.items():
        if not re.match(IDENTIFIER, str(key)):
            raise UsageError(f"field name '{key}' is not an identifier")
        if isinstance(value, dict | list) or value is None:
            raise UsageError(f"field '{key}' must be a plain value")
        out[str(key)] = str(value)
    return out


def _check_name(name: str) -> str:
    if not re.match(IDENTIFIER, name):
        raise UsageError(
            f"'{name}' is not a valid credential name",
            hint="use letters, digits and _, starting with a letter",
        )
    return name


def _same(held: Any, values: dict[str, Any]) -> bool:
    """Whether the decrypted fields `held` are exactly `values` (either side SecretStr)."""
    return isinstance(held, dict) and sops.revealed(held) == sops.revealed(values)


def open_file(
    ws: Workspace, where: Where, keys: dict[str, Path], *, reader: str | None = None
) -> dict[str, Any]:
    """The decrypted content of a credentials file ({} when it does not exist yet). An
    environment's file is read with its key, the global file with `reader`'s when given,
    else with whichever key given is one of its recipients."""
    data = ws.git.blob_at(where.location.commit, where.path)
    if data is None:
        return {}
    env = reader or (None if where.label == "global" else where.label)
    if env is not None:
        return sops.decrypt(data, keys.get(env), what=where.shown, env=env)
    if not keys:
        raise sops.KeyMissing(
            f"no age key given, so {where.shown} cannot be decrypted",
            hint="pass --age-key-file ENV=PATH with the key of an environment that reads it, "
            "or --age-key-dir DIR, or set LOOMGIT_AGE_KEY_FILE_<ENV>",
        )
    refused: list[sops.KeyMissing] = []
    for env, key in keys.items():
        try:
            return sops.decrypt(data, key, what=where.shown, env=env)
        except sops.KeyMissing as exc:  # not one of its recipients: the next may be
            refused.append(exc)
    if len(refused) == 1:
        raise refused[0]
    raise sops.KeyMissing(
        f"none of the age keys given ({', '.join(keys)}) can decrypt {where.shown}",
        hint="it is encrypted for none of them; `loomgit keys list` shows whose keys it is",
    )


def _save(
    ws: Workspace,
    where: Where,
    doc: dict[str, Any],
    message: str,
    extra: dict[str, bytes | None] | None = None,
) -> Written:
    content = sops.encrypt(doc, recipients(ws, where), what=where.shown) if doc else None
    return write(ws, where.location, {where.path: content, **(extra or {})}, message)


def set_credential(
    ws: Workspace, name: str, env: str | None, fields: dict[str, Any], keys: dict[str, Path]
) -> list[Written]:
    """Adds or replaces credential `name` in `env`'s file (or the global one)."""
    _check_name(name)
    values = _fields(fields)
    if env is None and name in ws.config.scoped_only:
        raise Refused(
            f"{name} is scoped_only in loomgit.yaml; set it per environment",
            hint=f"loomgit credentials set {name} --env ENV",
        )
    targets = global_files(ws) if env is None else [scoped_file(ws, ws.check_env(env))]
    why = _broken(ws, name, env, list(values))
    if why:
        raise Refused(
            why,
            hint="give it every field in use; drop one once no workflow uses it",
        )
    written = []
    for where in targets:
        doc = open_file(ws, where, keys)
        if _same(doc.get(name), values):
            continue  # re-encrypting the same values would only make a commit
        doc[name] = values
        message = (
            f"Set credential {name} in {where.label}\n\n"
            f"Loomgit-Credential: {where.label} {name} set\n"
        )
        written.append(_save(ws, where, doc, message))
    return written


def remove_credential(
    ws: Workspace, name: str, env: str | None, keys: dict[str, Path]
) -> list[Written]:
    targets = global_files(ws) if env is None else [scoped_file(ws, ws.check_env(env))]
    why = _broken(ws, name, env, None)
    if why:
        raise Refused(
            why,
            hint=f"remove {name} from those workflows first (and promote that), or keep it; "
            "`loomgit credentials set` replaces its values",
        )
    written = []
    for where in targets:
        doc = open_file(ws, where, keys)
        if name not in doc:
            raise Refused(f"there is no credential {name} in {where.shown}")
        del doc[name]
        message = (
            f"Remove credential {name} from {where.label}\n\n"
            f"Loomgit-Credential: {where.label} {name} removed\n"
        )
        written.append(_save(ws, where, doc, message))
    return written


def _broken(ws: Workspace, name: str, env: str | None, fields: list[str] | None) -> str | None:
    """Why credential `name` in `env`'s file (None: the global one) may not be removed
    (`fields` None) or set to `fields`: a workflow that declares it would no longer
    resolve it there, or would lack a field it uses, as `validate` would then say (LG700,
    LG701). Names only: no key is needed. None when nothing breaks."""
    from loomgit.documents import blob_id
    from loomgit.promotion import credentials_in

    unresolved: list[str] = []
    lacking: dict[str, list[str]] = {}  # field -> 'WORKFLOW in ENV' using it
    for e in [env] if env is not None else ws.config.names:
        loc = ws.location(e)
        scoped, shared = credentials_in(ws, loc)
        if env is None and scoped is not None and name in scoped.fields:
            continue  # its own copy resolves it there, whatever the global one holds
        after: tuple[str, ...] | None = None if fields is None else tuple(fields)
        falls_back = env is not None and name not in ws.config.scoped_only
        if after is None and falls_back and shared is not None:
            after = shared.fields.get(name)  # the global one takes over, if it has it
        paths = [loc.workflow(n) for n in ws.workflow_names(e)]
        for data in ws.git.blobs_at(loc.commit, paths).values():
            facts = ws.cache.workflow(blob_id(data), data).facts if data else None
            if facts is None or name not in facts.credentials:
                continue
            if after is None:
                unresolved.append(f"{facts.name} in {e}")
                continue
            for used, field, _ in facts.credential_fields:
                if used == name and field not in after:
                    lacking.setdefault(field, []).append(f"{facts.name} in {e}")
    if unresolved:
        return (
            f"{_listed(unresolved)} declare{'s' if len(unresolved) == 1 else ''} credential "
            f"{name}, which would then not resolve there"
        )
    if lacking:
        field, users = sorted(lacking.items())[0]
        return (
            f"{_listed(users)} use{'s' if len(users) == 1 else ''} field {field} of "
            f"credential {name}, which it would then lack"
        )
    return None


def _listed(users: list[str]) -> str:
    return ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")


def resolved_values(ws: Workspace, name: str, env: str, keys: dict[str, Path]) -> dict[str, Any]:
    """The fields of `name` as `env` resolves it (scoped first, then global), decrypted."""
    scoped = open_file(ws, scoped_file(ws, env), keys)
    if name in scoped:
        return dict(scoped[name])  # values stay SecretStr
    shared: dict[str, Any] = {}
    if name not in ws.config.scoped_only:
        shared = open_file(ws, global_files(ws)[0], keys, reader=env)
        if name in shared:
            return dict(shared[name])
    from loomgit.wording import closest

    known = sorted(set(scoped) | {n for n in shared if n not in ws.config.scoped_only})
    close = closest(name, known)
    raise Refused(
        f"credential {name} does not resolve in {env}",
        hint=f"did you mean {close}?"
        if close
        else f"{env} has {', '.join(known)}"
        if known
        else f"{env} has no credentials yet",
    )


def copy_changes(
    ws: Workspace, names: list[str], from_env: str, to_env: str, keys: dict[str, Path]
) -> tuple[Where, dict[str, bytes | None], list[str]]:
    """The encrypted target file with every credential in `names` copied from `from_env`
    (for one commit), and the names it changes: the target may already hold some, or all,
    with the same values, and those are left as they are."""
    copies = {name: resolved_values(ws, name, ws.check_env(from_env), keys) for name in names}
    where = scoped_file(ws, ws.check_env(to_env))
    doc = open_file(ws, where, keys)
    changed = [name for name, values in copies.items() if not _same(doc.get(name), values)]
    if not changed:
        return where, {}, []
    doc.update({name: copies[name] for name in changed})
    return where, {where.path: sops.encrypt(doc, recipients(ws, where), what=where.shown)}, changed


def copy_credential(
    ws: Workspace, name: str, from_env: str, to_env: str, keys: dict[str, Path]
) -> Written | None:
    """Copies `name` into `to_env`'s scoped file; None when it already has the same values."""
    where, changes, _ = copy_changes(ws, [name], from_env, to_env, keys)
    if not changes:
        return None
    message = (
        f"Copy credential {name} from {from_env} to {to_env}\n\n"
        f"Loomgit-Credential: {to_env} {name} copied from {from_env}\n"
    )
    return write(ws, where.location, changes, message)

"""Age recipients per environment in `.sops.yaml`, and new age identities.

Adding a recipient updates the environment's creation rule and the global file's rule (which
lists every environment's recipients) and re-encrypts the files whose recipients changed,
in the same commit. Removing one does the reverse; the global rule keeps a recipient that
another environment still has. Files are re-encrypted from their plaintext, so each gets a
new data key. A generated identity is written outside the repository, mode 0600."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrage import x25519
from ruamel.yaml import YAML

from loomgit import credentials, sops, yamlio
from loomgit.credops import (
    Where,
    global_files,
    open_file,
    recipients_under,
    scoped_file,
    sops_config_path,
)
from loomgit.errors import UsageError
from loomgit.promotion import Refused, Written, write
from loomgit.scaffold import SOPS_CONFIG_TEXT
from loomgit.workspace import Location, Workspace

ROTATE_HINT = (
    "the removed key can still decrypt the credentials in earlier commits: "
    "give the secrets new values (`loomgit credentials set`) if its holder must lose them"
)


def check_recipient(recipient: str) -> str:
    try:
        x25519.Recipient.from_str(recipient)
    except Exception:
        raise UsageError(
            f"'{recipient}' is not an age public key",
            hint="it starts with age1; `age-keygen -y KEYFILE` prints one",
        ) from None
    return recipient


def _rule_regex(ws: Workspace, env: str | None) -> str:
    """loomgit's path_regex for `env`'s scoped file, or for the global file (None)."""
    if ws.config.layout == "directories":
        if env is None:
            return r"credentials\.sops\.yaml$"
        return rf"environments/{re.escape(env)}/credentials\.sops\.yaml$"
    return r"^global-credentials\.sops\.yaml$" if env is None else r"^credentials\.sops\.yaml$"


def with_recipient(config: bytes | None, regex: str, recipient: str, first: bool) -> bytes:
    """`.sops.yaml` with `recipient` added to loomgit's own rule `regex` (a new rule, first
    or last, when there is none). Comments and other rules are kept. Raises YamlFailure
    when the file cannot be read."""

    def change(doc: Any) -> Any:
        if not isinstance(doc, dict):
            doc = YAML(typ="rt").load(SOPS_CONFIG_TEXT)
        rules = doc.get("creation_rules")
        if not isinstance(rules, list):
            rules = doc["creation_rules"] = []
        for rule in rules:
            # Only loomgit's own rule for this file: a broader rule that happens to match
            # (the global one matches every credentials file) must not be widened.
            if isinstance(rule, dict) and str(rule.get("path_regex") or "") == regex:
                current = list(credentials.split_recipients(rule.get("age")))
                if recipient not in current:
                    rule["age"] = ",".join([*current, recipient])
                break
        else:
            rules.insert(0 if first else len(rules), {"path_regex": regex, "age": recipient})
        return doc

    text = yamlio.decode(config) if config else ""
    return yamlio.rewrite(text, change).encode()


def without_recipient(config: bytes, regex: str, recipient: str) -> bytes:
    """`.sops.yaml` with `recipient` taken out of loomgit's own rule `regex`; comments and
    other rules are kept. Raises YamlFailure when the file cannot be read."""

    def change(doc: Any) -> Any:
        rules = doc.get("creation_rules") if isinstance(doc, dict) else None
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict) and str(rule.get("path_regex") or "") == regex:
                rule["age"] = ",".join(
                    r for r in credentials.split_recipients(rule.get("age")) if r != recipient
                )
                break
        return doc

    return yamlio.rewrite(yamlio.decode(config), change).encode()


def _refused_config(exc: yamlio.YamlFailure, config_path: str) -> Refused:
    return Refused(
        f"{exc.problem.at(config_path).location()}: {exc.problem.message}",
        hint="fix it by hand first; `loomgit validate` checks it too",
    )


Plan = list[tuple[Location, list[Where]]]  # per branch, the credentials files to change


def _rewritten(
    ws: Workspace,
    plan: Plan,
    edit: Callable[[bytes | None, Where], bytes],
    keys: dict[str, Path],
    message: str,
    check: Callable[[Where, tuple[str, ...]], None] | None = None,
) -> list[Written]:
    """Each branch's `.sops.yaml` changed by `edit` for each of its files, and those files
    re-encrypted from their plaintext for the recipients it then gives them (so with a
    new data key), one commit per branch. Every branch's change is made before any is
    written: a refusal (`check`, an unreadable `.sops.yaml`, a key missing) writes
    nothing."""
    config_path = sops_config_path(ws)
    commits: list[tuple[Location, dict[str, bytes | None]]] = []
    for loc, files in plan:
        config = ws.git.blob_at(loc.commit, config_path)
        try:
            for where in files:
                config = edit(config, where)
        except yamlio.YamlFailure as exc:
            raise _refused_config(exc, config_path) from None
        changes: dict[str, bytes | None] = {config_path: config}
        for where in files:
            targets = recipients_under(ws, config, where)
            if check is not None:
                check(where, targets)
            if ws.git.blob_at(loc.commit, where.path) is not None:
                doc = open_file(ws, where, keys)
                changes[where.path] = sops.encrypt(doc, list(targets), what=where.shown)
        commits.append((loc, changes))
    return [write(ws, loc, changes, message) for loc, changes in commits]


def _regex_of(ws: Workspace, where: Where, env: str) -> str:
    return _rule_regex(ws, None if where.label == "global" else env)


def add_recipient(ws: Workspace, env: str, recipient: str, keys: dict[str, Path]) -> list[Written]:
    """Lets `recipient` decrypt `env`'s credentials and the global ones. Writes nothing
    (an empty list) when it already does."""
    ws.check_env(env)
    check_recipient(recipient)
    scoped = scoped_file(ws, env)
    shared = global_files(ws)
    plan: Plan
    if ws.config.layout == "directories":
        plan = [(scoped.location, [scoped, shared[0]])]
    else:
        plan = [(w.location, [scoped, w] if w.location.env == env else [w]) for w in shared]

    if _has_already(ws, plan, recipient):
        return []

    def edit(config: bytes | None, where: Where) -> bytes:
        first = where.label != "global"
        return with_recipient(config, _regex_of(ws, where, env), recipient, first)

    message = f"Add an age recipient for {env}\n\nLoomgit-Keys: {env} add {recipient}\n"
    return _rewritten(ws, plan, edit, keys, message)


def _has_already(ws: Workspace, plan: Plan, recipient: str) -> bool:
    """Whether `.sops.yaml` already gives `recipient` every planned file, and each file
    that exists is encrypted for exactly the recipients it gives (a file that is not is
    re-encrypted by adding, which mends it)."""
    config_path = sops_config_path(ws)
    for loc, files in plan:
        config = ws.git.blob_at(loc.commit, config_path)
        for where in files:
            targets = recipients_under(ws, config, where)
            if recipient not in targets:
                return False
            data = ws.git.blob_at(loc.commit, where.path)
            if data is not None and credentials.read(data).recipients != frozenset(targets):
                return False
    return True


def remove_recipient(
    ws: Workspace, env: str, recipient: str, keys: dict[str, Path]
) -> list[Written]:
    """Stops `recipient` decrypting `env`'s credentials, and the global ones unless another
    environment still has it. Refused, with nothing written, when it is not `env`'s, when
    it is `env`'s only one, or when a rule loomgit does not manage gives it."""
    ws.check_env(env)
    check_recipient(recipient)
    config_path = sops_config_path(ws)

    def of(where: Where) -> tuple[str, ...]:
        return recipients_under(ws, ws.git.blob_at(where.location.commit, config_path), where)

    scoped = scoped_file(ws, env)
    current = of(scoped)
    if recipient not in current:
        raise Refused(
            f"{recipient} is not an age recipient of {env}",
            hint=f"`loomgit keys list --env {env}` shows them",
        )
    if len(current) == 1:
        raise Refused(
            f"{recipient} is {env}'s only age recipient; nobody could decrypt its credentials",
            hint=f"add the new key first: loomgit keys generate --env {env} --out PATH",
        )
    # The global file keeps a key that another environment still has.
    keep_global = any(recipient in of(scoped_file(ws, o)) for o in ws.config.names if o != env)
    shared = [] if keep_global else [w for w in global_files(ws) if recipient in of(w)]
    if ws.config.layout == "directories":
        plan: Plan = [(scoped.location, [scoped, *shared])]
    else:
        plan = [(scoped.location, [scoped, *(w for w in shared if w.location.env == env)])]
        plan += [(w.location, [w]) for w in shared if w.location.env != env]

    def edit(config: bytes | None, where: Where) -> bytes:
        assert config is not None  # each planned file has a rule that gives the recipient
        return without_recipient(config, _regex_of(ws, where, env), recipient)

    def check(where: Where, targets: tuple[str, ...]) -> None:
        if recipient in targets:
            raise Refused(
                f"{config_path}: {recipient} comes from a creation rule loomgit does not "
                f"manage for {where.rule_path}",
                hint="take it out of that rule by hand; nothing was written",
            )

    message = f"Remove an age recipient from {env}\n\nLoomgit-Keys: {env} rm {recipient}\n"
    return _rewritten(ws, plan, edit, keys, message, check)


@dataclass(frozen=True)
class Recipients:
    environment: str
    recipients: tuple[str, ...]  # of its own credentials file
    global_recipients: tuple[str, ...]  # of the global file, as its branch's rules give them


def listing(ws: Workspace) -> list[Recipients]:
    """Each environment's age recipients, from `.sops.yaml`; needs no key."""
    config_path = sops_config_path(ws)
    out = []
    files = global_files(ws)
    shared = {w.location.env: w for w in files}
    for env in ws.config.names:
        scoped = scoped_file(ws, env)
        config = ws.git.blob_at(scoped.location.commit, config_path)
        glob = shared.get(env, files[0])
        out.append(
            Recipients(
                env, recipients_under(ws, config, scoped), recipients_under(ws, config, glob)
            )
        )
    return out


def generate(
    ws: Workspace, env: str, out: Path, keys: dict[str, Path]
) -> tuple[str, list[Written]]:
    """A new age identity for `env` in `out` (outside the repository, mode 0600), with its
    recipient added. If adding fails, the unused identity is removed again."""
    ws.check_env(env)
    target = out.expanduser().resolve()
    top = ws.root.toplevel
    if target == top or top in target.parents:
        raise Refused(
            f"{out} is inside the repository; keys never go into git",
            hint="write it somewhere private, e.g. ~/.config/loomgit/keys/",
        )
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder above the key would go
        raise Refused(f"cannot write {out}: {target.parent} is not a folder") from None
    except OSError as exc:
        raise Refused(f"cannot write {out}: {exc.strerror}") from None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Refused(f"{out} already exists; loomgit will not overwrite a key") from None
    except OSError as exc:
        raise Refused(f"cannot write {out}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"# age identity for loomgit environment {env}\n# public key: {recipient}\n{identity}\n"
        )
    try:
        return recipient, add_recipient(ws, env, recipient, keys)
    except BaseException:
        target.unlink(missing_ok=True)
        raise

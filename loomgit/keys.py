"""Age recipients per environment in `.sops.yaml`, and new age identities.

Adding a recipient updates the environment's creation rule and the global file's rule (which
lists every environment's recipients) and re-encrypts the files whose recipients changed,
in the same commit. Removing one does the reverse; the global rule keeps a recipient that
another environment still has. Files are re-encrypted from their plaintext, so each gets a
new data key. A generated identity is written outside the repository, mode 0600."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrage import x25519
from ruamel.yaml import YAML

from loomgit import credentials, sops, yamlio
from loomgit.credops import Where, global_files, open_file, scoped_file
from loomgit.errors import UsageError
from loomgit.promotion import Refused, Written, write
from loomgit.scaffold import SOPS_CONFIG_TEXT
from loomgit.workspace import Workspace

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


def _config_path(ws: Workspace) -> str:
    return (ws.root.prefix if ws.config.layout == "directories" else "") + ".sops.yaml"


def _effective(ws: Workspace, config: bytes | None, where: Where) -> tuple[str, ...]:
    """The recipients sops would encrypt `where` for under `config` (none: no own rule)."""
    shared = None if where.label == "global" else global_files(ws)[0].rule_path
    return credentials.read_config(config).recipients_for(where.rule_path, shared) or ()


def _refused_config(exc: yamlio.YamlFailure, config_path: str) -> Refused:
    return Refused(
        f"{exc.problem.at(config_path).location()}: {exc.problem.message}",
        hint="fix it by hand first; `loomgit validate` checks it too",
    )


def add_recipient(ws: Workspace, env: str, recipient: str, keys: dict[str, Path]) -> list[Written]:
    """Lets `recipient` decrypt `env`'s credentials and the global ones."""
    ws.check_env(env)
    check_recipient(recipient)
    scoped = scoped_file(ws, env)
    shared = global_files(ws)
    if ws.config.layout == "directories":
        plan = [(scoped.location, [scoped, shared[0]])]
    else:
        plan = [(w.location, [scoped, w] if w.location.env == env else [w]) for w in shared]
    written = []
    for loc, files in plan:
        config_path = (ws.root.prefix if ws.config.layout == "directories" else "") + ".sops.yaml"
        config = ws.git.blob_at(loc.commit, config_path)
        for where in files:
            regex = _rule_regex(ws, None if where.label == "global" else env)
            try:
                config = with_recipient(config, regex, recipient, first=where.label != "global")
            except yamlio.YamlFailure as exc:
                raise _refused_config(exc, config_path) from None
        changes: dict[str, bytes | None] = {config_path: config}
        rules = credentials.read_config(config)
        for where in files:
            if ws.git.blob_at(loc.commit, where.path) is None:
                continue
            doc = open_file(ws, where, keys)
            shared_path = None if where.label == "global" else shared[0].rule_path
            targets = list(rules.recipients_for(where.rule_path, shared_path) or [])
            changes[where.path] = sops.encrypt(doc, targets, what=where.path)
        message = f"Add an age recipient for {env}\n\nLoomgit-Keys: {env} add {recipient}\n"
        written.append(write(ws, loc, changes, message))
    return written


def remove_recipient(
    ws: Workspace, env: str, recipient: str, keys: dict[str, Path]
) -> list[Written]:
    """Stops `recipient` decrypting `env`'s credentials, and the global ones unless another
    environment still has it. Refused, with nothing written, when it is not `env`'s, when
    it is `env`'s only one, or when a rule loomgit does not manage gives it."""
    ws.check_env(env)
    check_recipient(recipient)
    config_path = _config_path(ws)
    scoped = scoped_file(ws, env)
    shared = global_files(ws)
    config = ws.git.blob_at(scoped.location.commit, config_path)
    current = _effective(ws, config, scoped)
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
    others: set[str] = set()
    for other in ws.config.names:
        if other != env:
            where = scoped_file(ws, other)
            at = ws.git.blob_at(where.location.commit, config_path)
            others.update(_effective(ws, at, where))
    keep_global = recipient in others
    if ws.config.layout == "directories":
        plan = [(scoped.location, [scoped] if keep_global else [scoped, shared[0]])]
    else:
        plan = [
            (w.location, ([scoped] if w.location.env == env else []) + ([] if keep_global else [w]))
            for w in shared
        ]
    written = []
    for loc, files in plan:
        if not files:
            continue
        before = ws.git.blob_at(loc.commit, config_path)
        if before is None:
            continue
        try:
            after = before
            for where in files:
                regex = _rule_regex(ws, None if where.label == "global" else env)
                after = without_recipient(after, regex, recipient)
        except yamlio.YamlFailure as exc:
            raise _refused_config(exc, config_path) from None
        changes: dict[str, bytes | None] = {config_path: after}
        for where in files:
            targets = _effective(ws, after, where)
            if recipient in targets:
                raise Refused(
                    f"{config_path}: {recipient} comes from a creation rule loomgit does not "
                    f"manage for {where.rule_path}",
                    hint="take it out of that rule by hand; nothing was written",
                )
            if ws.git.blob_at(loc.commit, where.path) is not None:
                doc = open_file(ws, where, keys)
                changes[where.path] = sops.encrypt(doc, list(targets), what=where.path)
        message = f"Remove an age recipient from {env}\n\nLoomgit-Keys: {env} rm {recipient}\n"
        written.append(write(ws, loc, changes, message))
    return written


@dataclass(frozen=True)
class Recipients:
    environment: str
    recipients: tuple[str, ...]  # of its own credentials file
    global_recipients: tuple[str, ...]  # of the global file, as its branch's rules give them


def listing(ws: Workspace) -> list[Recipients]:
    """Each environment's age recipients, from `.sops.yaml`; needs no key."""
    config_path = _config_path(ws)
    out = []
    shared = {w.location.env: w for w in global_files(ws)}
    for env in ws.config.names:
        scoped = scoped_file(ws, env)
        config = ws.git.blob_at(scoped.location.commit, config_path)
        glob = shared.get(env, global_files(ws)[0])
        out.append(Recipients(env, _effective(ws, config, scoped), _effective(ws, config, glob)))
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

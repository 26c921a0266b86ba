"""Credentials without keys: what a SOPS file holds (names and field names are readable,
values are not), whether it really is encrypted for exactly the recipients `.sops.yaml`
gives, and which credential a reference resolves to in an environment."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from loomgit import yamlio
from loomgit.findings import Finding
from loomgit.models.base import IDENTIFIER

SOPS_CONFIG = ".sops.yaml"
SCOPED_FILE = "credentials.sops.yaml"
GLOBAL_FILE_DIRECTORIES = "credentials.sops.yaml"  # at the loomgit root
GLOBAL_FILE_BRANCHES = "global-credentials.sops.yaml"  # on every environment branch
_ENC = re.compile(r"^ENC\[AES256_GCM,data:[^,]*,iv:[^,]+,tag:[^,]+,type:[a-z]+\]$")
_FOREIGN_GROUPS = ("kms", "gcp_kms", "azure_kv", "hc_vault", "pgp", "key_groups")
PLAINTEXT_NAME = re.compile(r"(^|/)(credentials|secrets)[^/]*\.ya?ml$", re.IGNORECASE)


@dataclass(frozen=True)
class CredentialFile:
    """A credentials file read without its key."""

    fields: dict[str, tuple[str, ...]]  # credential -> field names
    recipients: frozenset[str]
    findings: tuple[Finding, ...] = ()


@functools.lru_cache(maxsize=64)
def read(data: bytes) -> CredentialFile:
    """Names, field names and recipients of an encrypted credentials file, and every way
    in which it is not a proper SOPS/age file. Cached by content: the daemon asks for the
    same file once per workflow."""
    try:
        doc = yamlio.load(data)
    except yamlio.YamlFailure as exc:
        p = exc.problem
        return CredentialFile({}, frozenset(), (Finding(p.code, p.message, (), p.line, p.col),))
    if not isinstance(doc, dict):
        return CredentialFile(
            {},
            frozenset(),
            (Finding("LG702", "a credentials file is a mapping of credentials", (), 1, 1),),
        )
    out: list[Finding] = []
    meta = doc.get("sops")
    if not isinstance(meta, dict):
        out.append(
            Finding(
                "LG703",
                "this file holds secrets in plain text (no sops metadata); "
                "encrypt it with `loomgit credentials set`",
                (),
                1,
                1,
            )
        )
        meta = {}
    elif not (isinstance(meta.get("mac"), str) and _ENC.match(meta["mac"])):
        out.append(
            Finding(
                "LG702", "the sops metadata has no MAC, so tampering cannot be detected", ("sops",)
            )
        )
    for group in _FOREIGN_GROUPS:
        if meta.get(group):
            out.append(
                Finding(
                    "LG705",
                    f"the file uses a {group} key group; loomgit allows age recipients only",
                    ("sops", group),
                )
            )
    recipients = frozenset(
        str(e.get("recipient")) for e in meta.get("age") or [] if isinstance(e, dict)
    )
    fields: dict[str, tuple[str, ...]] = {}
    for name, value in doc.items():
        if name == "sops":
            continue
        if not re.match(IDENTIFIER, str(name)):
            out.append(Finding("LG702", f"credential name '{name}' is not an identifier", (name,)))
        if not isinstance(value, dict):
            out.append(
                Finding("LG702", f"credential '{name}' must be a mapping of fields", (name,))
            )
            continue
        fields[str(name)] = tuple(str(k) for k in value)
        for key, leaf in value.items():
            if not (isinstance(leaf, str) and _ENC.match(leaf)):
                out.append(Finding("LG702", f"{name}.{key} is not encrypted", (name, key)))
    return CredentialFile(fields, recipients, tuple(out))


@dataclass(frozen=True)
class Rule:
    path_regex: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class SopsConfig:
    rules: tuple[Rule, ...] = ()
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def recipients_for(self, path: str, shared: str | None = None) -> tuple[str, ...] | None:
        """The age recipients sops would use for `path` (the first rule that matches).

        With `shared` (the global file's path), a rule that also covers the global file does
        not count: an environment's secrets must not be readable with every key."""
        for rule in self.rules:
            try:
                if re.search(rule.path_regex, path):
                    if shared is not None and re.search(rule.path_regex, shared):
                        return None
                    return rule.recipients
            except re.error:
                return None
        return None


def split_recipients(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    return tuple(s.strip() for s in items if str(s).strip())


def read_config(data: bytes | None) -> SopsConfig:
    """The age creation rules of `.sops.yaml`."""
    if data is None:
        return SopsConfig()
    try:
        doc = yamlio.load(data)
    except yamlio.YamlFailure as exc:
        p = exc.problem
        return SopsConfig((), (Finding(p.code, p.message, (), p.line, p.col),))
    rules = []
    findings = []
    for i, rule in enumerate(doc.get("creation_rules") or [] if isinstance(doc, dict) else []):
        if not isinstance(rule, dict):
            continue
        for group in _FOREIGN_GROUPS:
            if rule.get(group):
                findings.append(
                    Finding(
                        "LG705",
                        f"creation rule {i} names a {group} key; "
                        "loomgit allows age recipients only",
                        ("creation_rules", i, group),
                    )
                )
        regex = str(rule.get("path_regex") or "")
        try:
            re.compile(regex)
        except re.error as exc:
            findings.append(
                Finding(
                    "LG707",
                    f"creation rule {i} has an invalid path_regex: {exc}",
                    ("creation_rules", i, "path_regex"),
                )
            )
            continue
        rules.append(Rule(regex, split_recipients(rule.get("age"))))
    return SopsConfig(tuple(rules), tuple(findings))


def resolve(
    name: str,
    scoped: CredentialFile | None,
    shared: CredentialFile | None,
    scoped_only: frozenset[str],
) -> tuple[str, tuple[str, ...]] | None:
    """Where `name` comes from in one environment: ('scoped' | 'global', its fields)."""
    if scoped is not None and name in scoped.fields:
        return "scoped", scoped.fields[name]
    if name not in scoped_only and shared is not None and name in shared.fields:
        return "global", shared.fields[name]
    return None

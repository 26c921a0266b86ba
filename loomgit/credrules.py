"""Credential rules of `validate`, all checked without any key: files are really encrypted
for exactly the recipients `.sops.yaml` gives, and every credential a workflow uses
resolves in every environment the workflow is in, with the fields its templates read."""

from __future__ import annotations

from dataclasses import dataclass

from loomgit import credentials
from loomgit.credentials import CredentialFile, SopsConfig
from loomgit.documents import ParsedWorkflow
from loomgit.findings import resolve
from loomgit.layout import FileRef, Snapshot
from loomgit.problems import Problem
from loomgit.wording import closest


@dataclass
class _Files:
    scoped: CredentialFile | None
    shared: CredentialFile | None
    config: SopsConfig


def _rule_path(snap: Snapshot, ref: FileRef) -> str:
    """The path `.sops.yaml` rules are matched against: relative to the loomgit root."""
    if snap.config.layout == "directories":
        return ref.path[len(snap.root.prefix) :]
    return ref.rel


def _read(snap: Snapshot, ref: FileRef | None, out: list[Problem]) -> CredentialFile | None:
    if ref is None:
        return None
    data = snap.bytes_of(ref)
    parsed = credentials.read(data)
    out.extend(p.at(ref.path) for p in resolve(data, parsed.findings))
    return parsed


def _recipients(
    snap: Snapshot,
    ref: FileRef | None,
    parsed: CredentialFile | None,
    config: SopsConfig,
    out: list[Problem],
    shared: str | None,
) -> None:
    if ref is None or parsed is None or any(f.code == "LG703" for f in parsed.findings):
        return
    path = _rule_path(snap, ref)
    expected = config.recipients_for(path, shared)
    if expected is None:
        why = (
            "only the global rule covers it, so every environment's key could read it"
            if shared and config.recipients_for(path)
            else "no creation rule covers it"
        )
        out.append(
            Problem("LG707", f"{path}: {why}; add keys with `loomgit keys add`", ref.path, 1, 1)
        )
        return
    extra = sorted(parsed.recipients - set(expected))
    missing = sorted(set(expected) - parsed.recipients)
    if extra or missing:
        parts = [f"not in .sops.yaml: {', '.join(extra)}"] if extra else []
        parts += [f"missing: {', '.join(missing)}"] if missing else []
        out.append(
            Problem(
                "LG704",
                f"recipients differ from .sops.yaml ({'; '.join(parts)}); "
                "re-encrypt with `loomgit keys add`",
                ref.path,
                1,
                1,
            )
        )


def check(
    snap: Snapshot, env: str, workflows: dict[str, tuple[FileRef, ParsedWorkflow]]
) -> list[Problem]:
    """Every credential problem of one environment."""
    files = snap.envs[env]
    out: list[Problem] = []
    config = SopsConfig()
    if files.sops_config is not None:
        data = snap.bytes_of(files.sops_config)
        config = credentials.read_config(data)
        out.extend(p.at(files.sops_config.path) for p in resolve(data, config.findings))
    scoped = _read(snap, files.credentials, out)
    shared = _read(snap, files.global_credentials, out)
    shared_path = (
        _rule_path(snap, files.global_credentials)
        if files.global_credentials
        else "credentials.sops.yaml"
        if snap.config.layout == "directories"
        else "global-credentials.sops.yaml"
    )
    _recipients(snap, files.credentials, scoped, config, out, shared_path)
    _recipients(snap, files.global_credentials, shared, config, out, None)
    for ref in files.secret_like:
        parsed = credentials.read(snap.bytes_of(ref))
        out.extend(
            Problem(f.code, f.message, ref.path, f.line, f.col)
            for f in parsed.findings
            if f.code == "LG703"
        )
    scoped_only = frozenset(snap.config.scoped_only)
    if shared is not None and files.global_credentials is not None:
        for name in sorted(scoped_only & set(shared.fields)):
            out.append(
                Problem(
                    "LG706",
                    f"{name} is scoped_only in loomgit.yaml, so it must not be in the global file",
                    files.global_credentials.path,
                    1,
                    1,
                )
            )
    for ref, wf in workflows.values():
        facts = wf.facts
        if facts is None:
            continue
        for i, name in enumerate(facts.credentials):
            if credentials.resolve(name, scoped, shared, scoped_only) is not None:
                continue
            if name in scoped_only:
                why = f"{name} is scoped_only and {env} has no scoped {name}"
            else:
                why = f"credential '{name}' is not defined for {env}, scoped or global"
            close = closest(name, _resolvable(scoped, shared, scoped_only))
            mend = (
                f"did you mean '{close}'?"
                if close
                else f"add it with `loomgit credentials set {name} --env {env}`"
            )
            out.append(
                Problem(
                    "LG700",
                    f"{why}; {mend}",
                    ref.path,
                    keypath=("spec", "credentials", i),
                )
            )
        for name, field, where in facts.credential_fields:
            found = credentials.resolve(name, scoped, shared, scoped_only)
            if found is not None and field not in found[1]:
                out.append(
                    Problem(
                        "LG701",
                        f"credential '{name}' has no field '{field}' in "
                        f"{env} (it has: {', '.join(found[1]) or 'none'})",
                        ref.path,
                        keypath=where,
                    )
                )
    return out


def _resolvable(
    scoped: CredentialFile | None, shared: CredentialFile | None, scoped_only: frozenset[str]
) -> list[str]:
    """The credential names that resolve in an environment, for a did-you-mean."""
    names = set(scoped.fields) if scoped is not None else set()
    if shared is not None:
        names |= {n for n in shared.fields if n not in scoped_only}
    return sorted(names)

"""Validation problems: one finding with a stable code, a file and a position."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]

# Stable codes. Never renumber: CI configurations and suppressions refer to them.
CODES: dict[str, str] = {
    # Reading files safely (before any object is built)
    "LG100": "file larger than the size limit",
    "LG101": "file is not valid UTF-8",
    "LG102": "YAML syntax error, or nested more than 1,000 levels deep",
    "LG103": "duplicate key in a mapping",
    "LG104": "custom or unsafe YAML tag",
    "LG105": "YAML aliases expand beyond the limit (alias bomb)",
    "LG106": "empty document",
    "LG107": "more than one YAML document in a file",
    "LG108": "document is not a mapping",
    "LG109": "number JSON cannot hold (.nan, .inf, 1e999)",
    "LG110": "symbolic link in the repository tree",
    "LG111": "path has the wrong type (a file where a folder belongs, or the reverse)",
    # Schema
    "LG200": "value does not match the schema",
    "LG201": "unknown key",
    "LG202": "required key missing",
    "LG203": "wrong apiVersion or kind",
    # Workflow rules
    "LG300": "metadata.name differs from the file name",
    "LG301": "two workflows share a name in one environment",
    "LG302": "two webhook triggers, of one workflow or of two, share method and path in one "
    "environment (paths that differ only in their `:parameter` names are the same path)",
    "LG310": "invalid cron expression",
    "LG311": "cron expression never fires",
    "LG312": "unknown time zone",
    "LG313": "webhook signature or auth credential not declared",
    "LG320": "duplicate step id",
    "LG321": "unknown step type, or a plugin's that cannot be loaded",
    "LG322": "invalid step parameters",
    "LG330": "template syntax error",
    "LG331": "template references something it may not use, or that is never there (a later "
    "step, an undeclared credential, a trigger field or a step output key that does not exist)",
    "LG332": "invalid JMESPath expression",
    "LG340": "variable used by a workflow is not defined in an environment it is in",
    # environment.yaml
    "LG400": "environment.yaml lists a workflow that does not exist",
    "LG401": "workflow file differs from the digest recorded at promotion (hand edit)",
    "LG402": "version is newer than any the previous environment has had",
    "LG403": "workflow in a promoted environment has no promotion record",
    "LG404": "promotion record is incomplete",
    # Repository layout
    "LG500": "loomgit.yaml is invalid",
    "LG501": "environment folder not declared in loomgit.yaml",
    "LG502": "environment is missing from the repository",
    # check-promotion: what a pull request may change after the first environment
    "LG600": (
        "change to a later environment that no loomgit command made (hand edit); in the branch"
        " layout a shared file (`loomgit.yaml`, `.gitignore`…) may change to what it is on the"
        " branch before"
    ),
    "LG601": "promoted content differs from the source at the recorded source commit",
    "LG602": "promotion does not come from the environment just before",
    "LG603": "version does not follow from the source",
    "LG604": "commit message trailers do not match the change",
    "LG605": "rollback to a version the environment never ran",
    # Credentials (checked without any key)
    "LG700": "credential a workflow declares does not resolve in an environment it is in",
    "LG701": "a template, webhook signature or auth uses a credential field that does not exist",
    "LG702": "credential file is not properly SOPS-encrypted",
    "LG703": "secrets stored in plain text",
    "LG704": "credential file's recipients differ from .sops.yaml",
    "LG705": "key group other than age (KMS, PGP, Vault …)",
    "LG706": "scoped-only credential in the global file",
    "LG707": ".sops.yaml has no usable creation rule for a credential file",
}


GROUPS = {
    "LG1": "Reading files safely",
    "LG2": "Schema",
    "LG3": "Workflow rules",
    "LG4": "Promotion records (environment.yaml)",
    "LG5": "Repository layout",
    "LG6": "Pull-request checks (`loomgit check-promotion`)",
    "LG7": "Credentials (checked without keys)",
}


def rules_markdown() -> str:
    """docs/rules.md, generated from CODES (a test keeps the committed file in step)."""
    out = [
        "# Validation rules",
        "",
        "Each problem `loomgit validate` or `loomgit check-promotion` reports carries one of",
        "these codes. Codes are stable: they are never renumbered or reused, so CI",
        "configurations can rely on them.",
        "",
        "Problems are printed as `path:line:col: error[CODE]: message`; `--format json` gives",
        "the same fields as a list of objects, `--format github` as pull-request annotations.",
        "Exit status: 0 valid, 1 problems found, 2 the repository cannot be read or the",
        "arguments are wrong (including an invalid `loomgit.yaml`, reported as LG500).",
    ]
    group = None
    for code, text in CODES.items():
        if code[:3] != group:
            group = code[:3]
            out += ["", f"## {GROUPS[group]}", "", "| code | problem |", "|---|---|"]
        out.append(f"| {code} | {text} |")
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. `path` is relative to the git top level (or `rev:path` for other branches)."""

    code: str
    message: str
    path: str = ""
    line: int | None = None
    col: int | None = None
    severity: Severity = "error"
    # Where in the document, until the line is looked up (in one read per file).
    keypath: tuple[str | int, ...] | None = field(default=None, compare=False, repr=False)

    def at(self, path: str) -> Problem:
        """The same problem, reported against `path` (cached problems are path-free)."""
        return dataclasses.replace(self, path=path)

    def location(self) -> str:
        parts = [self.path or "<repository>"]
        if self.line is not None:
            parts.append(str(self.line))
            parts.append(str(self.col if self.col is not None else 1))
        return ":".join(parts)

    def render(self) -> str:
        return f"{self.location()}: {self.severity}[{self.code}]: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "message": self.message,
        }


def sort_key(p: Problem) -> tuple[str, int, int, str]:
    return (p.path, p.line or 0, p.col or 0, p.code)


def _explains_first(p: Problem) -> tuple[int, str, int, int, str]:
    # A file that cannot be read (LG1xx) explains whatever else is said of it, and an
    # unknown key usually explains the "missing" one beside it (a misspelt key).
    rank = 0 if p.code.startswith("LG1") else 1 if p.code == "LG201" else 2
    return (rank, *sort_key(p))


def headline(problems: Sequence[Problem]) -> tuple[Problem, str]:
    """Where only one line can be given (a refusal, a condition's message): the problem
    most likely to explain the others, and " (and N more)"."""
    first = min(problems, key=_explains_first)
    return first, f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""


def first_changed_line(old: bytes | None, new: bytes) -> int:
    """The first line of `new` that differs from `old` (1 for a new file; the last line
    when `new` only lost lines at its end)."""
    if old is None:
        return 1
    before, after = old.splitlines(), new.splitlines()
    for number, (a, b) in enumerate(zip(before, after, strict=False), start=1):
        if a != b:
            return number
    return max(1, min(len(before), len(after)) + (len(after) > len(before)))

"""`check-promotion`: the pull-request gate. Every change a commit in BASE..HEAD makes to
an environment after the first must be a promotion from the environment just before
(identical to the source at the recorded commit, version consistent), an activation that
touches only `active`, or a rollback to a version that environment ran before."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loomgit import envstate, yamlio
from loomgit.credentials import GLOBAL_FILE_BRANCHES, SCOPED_FILE, SOPS_CONFIG
from loomgit.documents import DocumentCache, digest
from loomgit.errors import LoomgitError, RepositoryError
from loomgit.layout import ENV_FILE, VARS_FILE, branch_tip, load_config
from loomgit.models import DOCUMENT_KINDS, EnvironmentState, Repository, WorkflowState
from loomgit.parsestore import open_store
from loomgit.problems import Problem, first_changed_line, sort_key
from loomgit.scaffold import SCHEMAS
from loomgit.validate import Report, validate
from loomgit.vcs import UNSHALLOW_HINT, Git, Root, find_root
from loomgit.views import parse_message


@dataclass
class Change:
    """What one commit changed in one environment."""

    workflows: dict[str, str] = field(default_factory=dict)  # name -> A/M/D
    env_file: bool = False
    settings: list[str] = field(default_factory=list)  # variables, credentials, keys
    other: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What the checks of one range (and its review) read the commits with."""

    root: Root
    git: Git
    config: Repository
    head_env: str | None  # branch layout: the environment the checked range belongs to
    tips: dict[str, str | None] = field(default_factory=dict)  # branch layout: env -> tip
    # Files read for the commit being checked, and which source commits exist: a promotion
    # of 2,000 workflows read each file with its own git processes (78 s; 1.3 s this way).
    blobs: dict[tuple[str, str], bytes | None] = field(default_factory=dict)
    known: dict[str, bool] = field(default_factory=dict)

    def blob(self, commit: str, path: str) -> bytes | None:
        key = (commit, path)
        if key not in self.blobs:
            self.blobs[key] = self.git.blob_at(commit, path)
        return self.blobs[key]

    def read_ahead(self, commit: str, paths: list[str]) -> None:
        """Reads `paths` at `commit` at once, for `blob` to answer from."""
        wanted = [p for p in paths if (commit, p) not in self.blobs]
        if len(wanted) > 1:
            for path, data in self.git.blobs_at(commit, wanted).items():
                self.blobs[(commit, path)] = data

    def exists(self, commit: str) -> bool:
        if commit not in self.known:
            self.known[commit] = self.git.ref(commit) is not None
        return self.known[commit]

    def base(self, env: str) -> str:
        if self.config.layout == "directories":
            return f"{self.root.prefix}environments/{env}/"
        return ""

    def split(self, path: str) -> tuple[str, str] | None:
        """(environment, path inside it) of a changed file, or None for other files."""
        if self.config.layout == "branches":
            return (self.head_env, path) if self.head_env else None
        prefix = f"{self.root.prefix}environments/"
        if not path.startswith(prefix):
            return None
        env, _, rel = path[len(prefix) :].partition("/")
        return (env, rel) if rel else None


KEEP_FILE = "workflows/.gitkeep"  # written by `loomgit init` so the folder exists
# The JSON Schemas `loomgit init` commits for editors; in the branch layout they sit on
# every environment's branch, and `loomgit schema --write schemas/` refreshes them there
# after an upgrade. They change nothing that runs.
SCHEMA_FILES = frozenset(f"{SCHEMAS}/{kind}.schema.json" for kind in DOCUMENT_KINDS)


def changes(ctx: Context, parent: str, commit: str) -> dict[str, Change]:
    """What `commit` changed in each environment's files, compared with `parent`."""
    out = ctx.git.run("diff-tree", "-r", "-z", "--no-renames", "--name-status", parent, commit)
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0") if f]
    per_env: dict[str, Change] = {}
    for status, path in zip(fields[::2], fields[1::2], strict=True):
        where = ctx.split(path)
        if where is None:
            continue
        env, rel = where
        change = per_env.setdefault(env, Change())
        if rel == ENV_FILE:
            change.env_file = True
        elif rel.startswith("workflows/") and rel.count("/") == 1 and rel.endswith(".yaml"):
            change.workflows[rel[len("workflows/") : -len(".yaml")]] = status[0]
        elif rel in (VARS_FILE, SCOPED_FILE, GLOBAL_FILE_BRANCHES, SOPS_CONFIG):
            # Variables and credential changes are legal; validate checks the credentials
            # (encrypted, for exactly the recipients .sops.yaml gives) at HEAD.
            change.settings.append(rel)
        elif rel != KEEP_FILE and rel not in SCHEMA_FILES:
            change.other.append(rel)
    return per_env


def _ever_ran(ctx: Context, commit: str, env: str, name: str, state: WorkflowState) -> bool:
    path = ctx.base(env) + ENV_FILE
    log = ctx.git.path_log(commit, path)
    blobs = ctx.git.read_blobs(b for _, b in log if b)
    for _, blob in log:
        rec = envstate.record(blobs[blob], name) if blob else None
        if rec and rec.version == state.version and rec.digest == state.digest:
            return True
    return False


def _check_workflow(
    ctx: Context,
    commit: str,
    parent: str,
    env: str,
    name: str,
    new: WorkflowState | None,
    old: WorkflowState | None,
    trailers: dict[str, list[str]],
) -> list[tuple[str, str, int | None]]:
    """(code, reason, line) for one changed workflow file; the line, where there is one,
    is the first the commit changed, so that a pull-request annotation sits on it."""
    path = ctx.base(env) + f"workflows/{name}.yaml"
    content = ctx.blob(commit, path)
    if content is None:
        return [
            (
                "LG600",
                f"{name} was removed from {env}; environments after the first "
                f"change only through loomgit: `loomgit deactivate {name} --env {env}` "
                "stops it instead",
                None,
            )
        ]
    if new is None or new.digest != digest(content):
        return [
            (
                "LG600",
                f"{name} in {env} was edited by hand: it differs from the "
                "definition recorded in environment.yaml",
                first_changed_line(ctx.git.blob_at(parent, path), content),
            )
        ]
    if new.rolled_back_from and (old is None or old.version != new.version):
        if not _ever_ran(ctx, parent, env, name, new):
            return [
                (
                    "LG605",
                    f"{name} was rolled back in {env} to v{new.version}, which it never ran",
                    None,
                )
            ]
        claimed = trailers.get("Loomgit-Rollback", [])
        if not any(c.startswith(f"{env} {name} ") for c in claimed):
            return [
                (
                    "LG604",
                    f"rollback of {name} in {env} is not recorded in a Loomgit-Rollback trailer",
                    None,
                )
            ]
        return []
    names = ctx.config.names
    index = names.index(env)
    previous = names[index - 1]
    problems: list[tuple[str, str, int | None]] = []
    if new.promoted_from != previous:
        problems.append(
            (
                "LG602",
                f"{name} came to {env} from {new.promoted_from}, but "
                f"promotions to {env} come from {previous}",
                None,
            )
        )
        return problems
    if not new.source_commit or not ctx.exists(new.source_commit):
        return [("LG601", f"the source commit of {name} in {env} does not exist", None)]
    source_base = ctx.base(previous)
    source_commit = new.source_commit
    if ctx.config.layout == "branches" and previous != env:
        source_base = ""
    source = ctx.blob(source_commit, source_base + f"workflows/{name}.yaml")
    if source != content:
        problems.append(
            (
                "LG601",
                f"{name} in {env} differs from {previous} at "
                f"{source_commit[:12]}, the commit it claims to come from",
                first_changed_line(source, content),
            )
        )
    if index == 1:
        floor = max((old.version or 0, old.rolled_back_from or 0)) if old else 0
        if new.version is None or new.version <= floor:
            problems.append(
                (
                    "LG603",
                    f"{name} v{new.version} in {env} is not newer than v{floor}, which it replaces",
                    None,
                )
            )
    else:
        src = envstate.record(ctx.blob(source_commit, source_base + ENV_FILE), name)
        if src is None or src.version != new.version:
            had = f"v{src.version}" if src else "no record"
            problems.append(
                (
                    "LG603",
                    f"{name} is v{new.version} in {env}, but {previous} "
                    f"had {had} at {source_commit[:12]}",
                    None,
                )
            )
    if f"{name} v{new.version}" not in trailers.get(
        "Loomgit-Workflow", []
    ) or f"{previous} -> {env}" not in trailers.get("Loomgit-Promotion", []):
        problems.append(
            (
                "LG604",
                f"the commit message does not record the promotion of "
                f"{name} v{new.version} from {previous} to {env}",
                None,
            )
        )
    return problems


def _check_records(
    env: str,
    change: Change,
    old: dict[str, WorkflowState],
    new: dict[str, WorkflowState],
    did: list[str],
) -> list[tuple[str, str]]:
    """Record changes that come without a change to the workflow file itself; what they
    legally did is added to `did`."""
    out = []
    for name in sorted(set(old) | set(new)):
        if name in change.workflows or old.get(name) == new.get(name):
            continue
        before, after = old.get(name), new.get(name)
        if before is not None and after is not None:
            diff = [
                k for k in WorkflowState.model_fields if getattr(before, k) != getattr(after, k)
            ]
            if diff == ["active"]:
                did.append(f"{name} {'activated' if after.active else 'deactivated'} in {env}")
                continue
            out.append(
                ("LG600", f"the record of {name} in {env} was changed by hand ({', '.join(diff)})")
            )
        else:
            out.append(
                (
                    "LG600",
                    f"the record of {name} in {env} was {'added' if after else 'removed'} by hand",
                )
            )
    return out


def _read_ahead(
    ctx: Context, commit: str, env: str, names: list[str], records: bytes | None
) -> None:
    """Reads at once the files `_check_workflow` will read for `names`: each at `commit`,
    and at the source commit its record names (one for all, in a promotion)."""
    ctx.read_ahead(commit, [f"{ctx.base(env)}workflows/{name}.yaml" for name in names])
    index = ctx.config.names.index(env)
    previous = ctx.config.names[index - 1] if index else env
    source_base = "" if ctx.config.layout == "branches" else ctx.base(previous)
    sources: dict[str, list[str]] = {}
    for name in names:
        try:
            rec = envstate.record(records, name)
        except LoomgitError:  # the check reports it
            continue
        if rec and rec.source_commit and ctx.exists(rec.source_commit):
            sources.setdefault(rec.source_commit, []).append(f"{source_base}workflows/{name}.yaml")
    for source, paths in sources.items():
        ctx.read_ahead(source, paths)


def _check_commit(ctx: Context, commit: str) -> tuple[list[Problem], str]:
    """The problems of one commit, and a line saying what it legally did."""
    ctx.blobs.clear()  # read again for each commit: a long range holds no file for long
    out = ctx.git.run("rev-parse", "--verify", "--quiet", f"{commit}^", ok=(0, 1, 128))
    # A root commit (a range from unrelated history) is compared with the empty tree.
    parent = out.decode().strip() or ctx.git.empty_tree()
    subject, _, trailers = parse_message(ctx.git.commit_info(commit)["message"])
    short = commit[:12]
    problems: list[Problem] = []
    did: list[str] = []
    claimed = {v.split(" v")[0] for v in trailers.get("Loomgit-Workflow", [])}
    promoted: set[str] = set()
    for env, change in changes(ctx, parent, commit).items():
        if env == ctx.config.first and change.workflows:
            did.append(f"{', '.join(sorted(change.workflows))} edited in {env}")
        did += [f"{rel} changed in {env}" for rel in change.settings]
        if env not in ctx.config.names or env == ctx.config.first:
            continue
        where = ctx.base(env)
        old_file = ctx.git.blob_at(parent, where + ENV_FILE)
        new_file = ctx.git.blob_at(commit, where + ENV_FILE)
        old, new = envstate.changed_records(old_file, new_file)
        _read_ahead(ctx, commit, env, sorted(change.workflows), new_file)
        found: list[tuple[str, str, str, int | None]] = []
        for name in sorted(change.workflows):
            path = f"{where}workflows/{name}.yaml"
            # A file can change while its record does not: then read the unchanged record.
            new_rec = new.get(name) or envstate.record(new_file, name)
            old_rec = old.get(name) or envstate.record(old_file, name)
            wrong = _check_workflow(ctx, commit, parent, env, name, new_rec, old_rec, trailers)
            found += [(code, why, path, line) for code, why, line in wrong]
            if not (new_rec and new_rec.rolled_back_from):
                promoted.add(name)
            if not wrong and new_rec is not None:
                did.append(_what(env, name, new_rec, old_rec))
        for code, why in _check_records(env, change, old, new, did):
            found.append((code, why, where + ENV_FILE, None))
        for rel in change.other:
            refused = _other_file(ctx, commit, env, rel)
            if refused:
                found.append(("LG600", refused, where + rel, None))
        problems += [
            Problem(code, f"commit {short}: {why}", path, line) for code, why, path, line in found
        ]
    for name in sorted(claimed - promoted):
        problems.append(
            Problem(
                "LG604",
                f"commit {short}: its trailers claim a promotion of "
                f"{name} that it does not contain",
            )
        )
    return problems, _reviewed(short, subject, problems, "; ".join(did) or "no environment changed")


def _reviewed(short: str, subject: str, problems: list[Problem], did: str) -> str:
    """One commit's line in the report: its subject and what it did, or its errors."""
    title = subject if len(subject) <= 60 else subject[:59] + "…"
    count = len(problems)
    return f"{short} {title} — {f'{count} error' + 's' * (count != 1) if count else did}"


def _check_merge(ctx: Context, commit: str, parents: list[str]) -> tuple[list[Problem], str]:
    """A merge takes each side's commits, which are checked one by one; what it may add
    of its own is a conflict's resolution. An environment's record of a workflow after a
    merge must be one of its parents' records of it (git may take one side's record and
    the other's of another workflow), and a workflow file one of its parents' files: a
    version, a source or a file changed while resolving is a change by hand."""
    subject, _, _ = parse_message(ctx.git.commit_info(commit)["message"])
    # The files that differ from every parent: only those did the merge itself make.
    out = ctx.git.run("diff-tree", "-r", "-z", "-c", "--name-only", "--no-commit-id", commit)
    paths = [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]
    short = commit[:12]
    problems: list[Problem] = []
    for path in paths:
        where = ctx.split(path)
        if where is None or where[0] not in ctx.config.names or where[0] == ctx.config.first:
            continue
        env, rel = where
        if rel == ENV_FILE:
            try:
                new = envstate.records(ctx.git.blob_at(commit, path))
                sides = [envstate.records(ctx.git.blob_at(p, path)) for p in parents]
            except LoomgitError:  # a file that does not parse: validate reports it
                continue
            for name in sorted(set(new).union(*sides)):
                if not any(side.get(name) == new.get(name) for side in sides):
                    problems.append(
                        Problem(
                            "LG600",
                            f"commit {short} (a merge): the record of {name} in {env} is "
                            "neither side's; resolve a conflict by taking one side's record, "
                            "then promote, activate or roll back again",
                            path,
                        )
                    )
        elif rel.startswith("workflows/") and rel.count("/") == 1 and rel.endswith(".yaml"):
            problems.append(
                Problem(
                    "LG600",
                    f"commit {short} (a merge): {rel[len('workflows/') : -len('.yaml')]} in "
                    f"{env} is neither side's; resolve a conflict by taking one side's file",
                    path,
                )
            )
    return problems, _reviewed(short, subject, problems, "a merge, adding nothing of its own")


def _what(env: str, name: str, new: WorkflowState, old: WorkflowState | None) -> str:
    """What a legal change to a workflow file in a later environment did."""
    if new.rolled_back_from and (old is None or old.version != new.version):
        return f"{name} rolled back to v{new.version} in {env}"
    started = new.active and not (old and old.active)
    return f"{name} v{new.version} promoted to {env}" + (" and activated" if started else "")


def _other_file(ctx: Context, commit: str, env: str, rel: str) -> str | None:
    """Why a change to a file loomgit does not manage in `env` is refused, or None.

    In the branch layout every branch holds the repository's shared files (loomgit.yaml,
    which is the same on every branch, .gitignore, the CI workflow…). Such a file may
    change on a later branch to what it is on the branch just before, so a change made
    on the first branch goes through the pipeline in order, as promotions do."""
    refused = f"{rel} in {env} is not a file loomgit manages there"
    if ctx.config.layout != "branches":
        return refused
    before = ctx.config.names[ctx.config.index(env) - 1]
    if before not in ctx.tips:
        ctx.tips[before] = branch_tip(ctx.git, ctx.config, before)
    tip = ctx.tips[before]
    if tip is None:
        return refused
    there = ctx.git.blob_at(tip, rel)
    if ctx.git.blob_at(commit, rel) == there:
        return None
    if there is None:
        return refused
    branch = ctx.config.branch_of(before)
    return f"{rel} in {env} is not as on {branch}: shared files change there first"


def branch_env(git: Git, config: Repository, commit: str, head: str) -> str | None:
    """Branch layout: the environment the checked commits belong to."""
    if config.layout != "branches":
        return None
    data = git.blob_at(commit, ENV_FILE)
    try:
        named = (
            EnvironmentState.model_validate(yamlio.load(data, yamlio.MAX_STATE_BYTES)).environment
            if data
            else None
        )
    except (yamlio.YamlFailure, ValueError):
        named = None  # validate reports it
    if named in config.names:
        return named
    return next((e for e in config.names if config.branch_of(e) == head), None)


def check_promotion(
    path: Path, base: str, head: str = "HEAD", *, validate_head: bool = True, reuse: bool = True
) -> Report:
    """Checks every commit in BASE..HEAD, then (unless told not to) validates HEAD,
    reusing what earlier runs found about unchanged files unless `reuse` is False."""
    root = find_root(path, head)
    with Git(root.toplevel) as git:
        cache = DocumentCache(open_store(git, reuse and validate_head))
        if git.is_shallow():  # the commits promoted from would look missing: false errors
            raise RepositoryError(
                f"{root.toplevel} is a shallow clone; check-promotion reads the commits "
                "that promotions copy from, so it needs the whole history",
                hint=UNSHALLOW_HINT,
            )
        base_commit, head_commit = git.resolve(base), git.resolve(head)
        config = load_config(root, git, cache, head_commit)
        head_env = branch_env(git, config, head_commit, head)
        ctx = Context(root, git, config, head_env)
        commits = git.run("rev-list", "--reverse", "--parents", f"{base_commit}..{head_commit}")
        problems: list[Problem] = []
        listed = [line.split() for line in commits.decode().splitlines()]
        reviewed = []
        for commit, *parents in listed:
            if len(parents) > 1:
                found, line = _check_merge(ctx, commit, parents)
            else:
                found, line = _check_commit(ctx, commit)
            problems += found
            reviewed.append(line)
    span = f"{len(listed)} commit{'s' * (len(listed) != 1)} {base_commit[:12]}..{head_commit[:12]}"
    if not validate_head:
        return Report(
            sorted(problems, key=sort_key), config.names, 0, span, reviewed, validated=False
        )
    report = validate(path, rev=head_commit, cache=cache)
    everything = sorted({*problems, *report.problems}, key=sort_key)
    return Report(everything, report.environments, report.workflows, span, reviewed)

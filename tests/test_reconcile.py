"""A cycle rebuilds what changed and keeps the rest; what it keeps is what a fresh
reconciler would build from the same commit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Repo, Result, commit_all, git, promoted, state_yaml
from pipeline import Pipeline

from loomgit import sops
from loomgit.documents import blob_id
from loomgit.reconcile import Reconciler
from loomgit.vcs import Git

ENVS = ("development", "staging", "production")
OTHER = HELLO.replace("name: hello", "name: other").replace("path: hello", "path: other")


def _keys(age_key: AgeKey) -> dict[str, Path]:
    return dict.fromkeys(ENVS, age_key.path)


def _two_workflows(repo: Repo) -> None:
    for env, source in (("staging", "development"), ("production", "staging")):
        records = {}
        for name, text in (("hello", HELLO), ("other", OTHER)):
            repo.write(repo.wf(env, name), text)
            records[name] = promoted(text, 1, source, repo.source_commit, active=True)
        repo.write(f"environments/{env}/environment.yaml", state_yaml(env, records))
    repo.write(repo.wf("development", "other"), OTHER)
    commit_all(repo.path, "two active workflows")


def _same_as_fresh(reconciler: Reconciler, repo: Repo, age_key: AgeKey) -> None:
    fresh = Reconciler(repo.path, _keys(age_key))
    fresh.cycle()
    for env in ENVS:
        kept, built = reconciler.served[env], fresh.served[env]
        assert (kept.commit, kept.active, kept.hooks, kept.api) == (
            built.commit,
            built.active,
            built.hooks,
            built.api,
        )
        for name, dep in built.deployments.items():
            mine = kept.deployments[name]
            assert (mine.version, mine.digest, mine.variables, mine.credentials) == (
                dep.version,
                dep.digest,
                dep.variables,
                dep.credentials,
            )


def test_a_commit_rebuilds_only_the_workflows_it_changed(repo: Repo, age_key: AgeKey) -> None:
    _two_workflows(repo)
    reconciler = Reconciler(repo.path, _keys(age_key))
    reconciler.cycle()
    before = {env: dict(reconciler.served[env].deployments) for env in ENVS}
    state = (repo.path / "environments/staging/environment.yaml").read_text()
    staged = state.replace(
        "  other:\n    version: 1\n    active: true", "  other:\n    version: 1\n    active: false"
    )
    repo.write("environments/staging/environment.yaml", staged)
    commit_all(repo.path, "deactivate other in staging")
    status = reconciler.cycle()
    after = reconciler.served
    assert after["staging"].active == {"hello"}
    ready = {env: status[env].conditions[0].message for env in ("staging", "production")}
    assert ready == {
        "staging": "serving 1 active workflow, 1 inactive",
        "production": "serving 2 active workflows",
    }
    assert after["staging"].deployments["hello"] is before["staging"]["hello"]
    assert after["staging"].deployments["other"] is not before["staging"]["other"]
    for env in ("development", "production"):  # a new commit, nothing of theirs changed
        assert all(after[env].deployments[n] is d for n, d in before[env].items())
    _same_as_fresh(reconciler, repo, age_key)


def test_a_changed_credentials_file_rebuilds_every_active_workflow(
    repo: Repo, age_key: AgeKey
) -> None:
    _two_workflows(repo)
    reconciler = Reconciler(repo.path, _keys(age_key))
    reconciler.cycle()
    assert reconciler.served["production"].deployments["other"].credentials == {
        "greeter": {"token": "LOOMGIT-CANARY-greeter"}
    }
    rotated = sops.encrypt(
        {"greeter": {"token": "LOOMGIT-CANARY-rotated"}},
        [age_key.recipient],
        what="credentials.sops.yaml",
    )
    repo.write("credentials.sops.yaml", rotated)
    commit_all(repo.path, "rotate the greeter token")
    reconciler.cycle()
    for env in ("staging", "production"):
        for name in ("hello", "other"):
            dep = reconciler.served[env].deployments[name]
            assert dep.credentials == {"greeter": {"token": "LOOMGIT-CANARY-rotated"}}
        # Workflows that declare the same credentials share them, their redactor and the
        # environment's variables (one copy each, however many workflows).
        hello, other = (reconciler.served[env].deployments[n] for n in ("hello", "other"))
        assert hello.credentials is other.credentials and hello.redactor is other.redactor
        assert hello.variables is other.variables
        assert hello.redactor.text("LOOMGIT-CANARY-rotated") != "LOOMGIT-CANARY-rotated"
    _same_as_fresh(reconciler, repo, age_key)


def test_changes_one_after_another_end_where_a_fresh_reconciler_starts(
    repo: Repo, age_key: AgeKey, cli: Callable[..., Result]
) -> None:
    reconciler = Reconciler(repo.path, _keys(age_key))
    reconciler.cycle()

    def edit_and_promote() -> None:
        repo.write(repo.wf("development"), HELLO.replace("}}, {{", "}}! {{"))
        commit_all(repo.path, "edit hello")
        assert cli("promote", "hello", "--to", "staging", "--repo", repo.path).code == 0

    def new_variables() -> None:
        repo.write(
            "environments/production/variables.yaml",
            "apiVersion: loomgit/v1\nkind: Variables\nvariables:\n  greeting: Hi\n",
        )
        commit_all(repo.path, "variables")

    steps = [
        lambda: cli("activate", "hello", "--env", "staging", "--repo", repo.path),
        lambda: cli("activate", "hello", "--env", "production", "--repo", repo.path),
        edit_and_promote,
        new_variables,
        lambda: cli("promote", "hello", "--to", "production", "--repo", repo.path),
        lambda: cli("deactivate", "hello", "--env", "staging", "--repo", repo.path),
    ]
    for step in steps:
        step()
        reconciler.cycle()
        assert all(st.conditions[0].reason == "Ready" for st in reconciler.status.values()), [
            st.conditions[0].message for st in reconciler.status.values()
        ]
        _same_as_fresh(reconciler, repo, age_key)
    assert reconciler.served["production"].deployments["hello"].version == 2
    assert reconciler.served["production"].deployments["hello"].variables == {"greeting": "Hi"}


def test_a_cycle_reads_only_the_files_it_has_not_parsed(
    repo: Repo, age_key: AgeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_workflows(repo)
    reconciler = Reconciler(repo.path, _keys(age_key))
    reconciler.cycle()
    read: list[str] = []
    original = Git.read_blobs

    def counting(self: Git, shas: Iterable[str]) -> dict[str, bytes]:
        wanted = list(shas)
        read.extend(wanted)
        return original(self, wanted)

    monkeypatch.setattr(Git, "read_blobs", counting)
    edited = HELLO.replace("}}, {{", "}}! {{")
    repo.write(repo.wf("development"), edited)
    commit_all(repo.path, "edit hello in development")
    reconciler.cycle()
    assert reconciler.status["development"].conditions[0].reason == "Ready"
    workflows = {e.sha for e in Git(repo.path).ls_tree("HEAD") if "/workflows/" in e.path}
    assert set(read) & workflows == {blob_id(edited.encode())}


def test_a_large_change_is_parsed_here_when_the_workers_fail(repo: Repo, age_key: AgeKey) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from loomgit.documents import PARALLEL_MIN

    class Broken:
        def map(
            self, fn: Callable[[object], object], items: Iterable[object], /
        ) -> Iterator[object]:
            raise BrokenProcessPool("a worker was killed")

    for i in range(PARALLEL_MIN + 2):
        text = OTHER.replace("name: other", f"name: other{i}").replace("path: other", f"path: o{i}")
        repo.write(repo.wf("development", f"other{i}"), text)
    commit_all(repo.path, "many workflows")
    reconciler = Reconciler(repo.path, _keys(age_key), ["development"], pool=Broken())
    status = reconciler.cycle()
    assert status["development"].conditions[0].reason == "Ready"
    assert len(reconciler.served["development"].deployments) == PARALLEL_MIN + 3


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[1]",
        '{"repositories": [1, 2]}',
        '{"repositories": {"/r": "x"}}',
        '{"repositories": {"/r": {"qa": "x", "dev": {"commit": 1, "applied_at": 2}}}}',
    ],
)
def test_a_damaged_record_of_applied_commits_is_read_as_empty_and_mended(
    tmp_path: Path, text: str
) -> None:
    from loomgit.reconcile import AppliedRecord

    path = tmp_path / "applied.json"
    path.write_text(text)
    record = AppliedRecord(path)
    assert record.read("/r") == {}
    record.write("/r", {"staging": ("c0ffee", 1.5)})
    record.write("/other", {"production": ("beef", 2.0)})  # kept beside, not instead
    assert record.read("/r") == {"staging": ("c0ffee", 1.5)}
    assert record.read("/other") == {"production": ("beef", 2.0)}


def _keep_applied(path: Path, repo: str) -> None:
    from loomgit.reconcile import AppliedRecord

    record = AppliedRecord(path)
    for n in range(15):
        record.write(repo, {"staging": (f"commit-{n}", float(n))})


def test_daemons_sharing_a_state_folder_keep_each_others_applied_commits(
    tmp_path: Path,
) -> None:
    """Each daemon reads, changes and replaces the whole record: at the same time,
    without a lock, one wrote over what another had just written."""
    import multiprocessing

    from loomgit.reconcile import AppliedRecord

    path = tmp_path / "applied.json"
    context = multiprocessing.get_context("fork")
    daemons = [context.Process(target=_keep_applied, args=(path, f"/repo-{i}")) for i in range(6)]
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        daemon.join()
    record = AppliedRecord(path)
    assert [record.read(f"/repo-{i}") for i in range(6)] == [{"staging": ("commit-14", 14.0)}] * 6


@pytest.mark.parametrize("pipe", ["directories", "branches"], indirect=True)
def test_a_commit_whose_loomgit_yaml_breaks_is_attempted_where_it_is(
    pipe: Pipeline, age_key: AgeKey
) -> None:
    """ReadFailed keeps what runs. In the directory layout the commit is every
    environment's last attempted one; in the branch layout only its own branch's, and
    which that is cannot be read, so the others' stay as they were."""
    reconciler = Reconciler(pipe.path, _keys(age_key))
    reconciler.cycle()
    applied = {env: reconciler.status[env].last_applied_commit for env in ENVS}
    config = pipe.path / "loomgit.yaml"  # on development's branch, checked out
    config.write_text(config.read_text() + "layout: sideways\n")
    bad = commit_all(pipe.path, "break loomgit.yaml")
    status = reconciler.cycle()
    for env in ENVS:
        assert status[env].conditions[0].reason == "ReadFailed"
        assert "error[LG500]" in status[env].conditions[0].message
        assert status[env].last_applied_commit == applied[env]
        expected = bad if pipe.layout == "directories" else applied[env]
        assert status[env].last_attempted_commit == expected


@pytest.mark.parametrize("pipe", ["branches"], indirect=True)
def test_a_clone_on_a_later_branch_reads_the_first_from_origin(
    pipe: Pipeline, age_key: AgeKey, tmp_path: Path
) -> None:
    """A clone has only its checked-out branch of its own: the first environment's
    branch, whose loomgit.yaml every environment is read with, comes from origin/. With
    that branch gone as well, nothing is read and the message says which branch."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", "--branch", "env/production", str(pipe.path), str(clone))
    assert "env/development" not in git(clone, "branch", "--list")
    reconciler = Reconciler(clone, _keys(age_key))
    status = reconciler.cycle()
    assert {env: status[env].conditions[0].reason for env in ENVS} == dict.fromkeys(ENVS, "Ready")
    assert status["development"].last_applied_commit == pipe.tip("development")
    git(clone, "update-ref", "-d", "refs/remotes/origin/env/development")
    status = reconciler.cycle()
    for env in ENVS:
        assert status[env].conditions[0].reason == "ReadFailed"
        assert status[env].conditions[0].message == (
            "the first environment 'development' has no branch 'env/development': its"
            " loomgit.yaml is the one every environment is read with"
        )
        assert status[env].last_applied_commit is not None

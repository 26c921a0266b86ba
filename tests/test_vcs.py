"""The git plumbing that reads and writes many files at once gives what git itself gives."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import commit_all, git

from loomgit import vcs
from loomgit.vcs import Git


def _repository(tmp_path: Path) -> tuple[Path, str]:
    """A repository with a folder of many files, a nested one, a symbolic link, an empty
    file and a file whose name needs quoting."""
    path = tmp_path / "r"
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.name", "T")
    git(path, "config", "user.email", "t@example.com")
    flows = path / "environments/staging/workflows"
    flows.mkdir(parents=True)
    for i in range(vcs.MANY_PATHS + 10):
        (flows / f"wf-{i:03d}.yaml").write_text(f"n: {i}\n")
    (path / "environments/staging/environment.yaml").write_text("workflows: {}\n")
    (path / "environments/staging/deep/er").mkdir(parents=True)
    (path / "environments/staging/deep/er/x.yaml").write_text("deep\n")
    (path / "empty").write_bytes(b"")
    (path / "tab\tand ü.yaml").write_text("odd\n")
    os.symlink("environment.yaml", path / "environments/staging/link.yaml")
    return path, commit_all(path, "files")


def test_reading_many_files_at_once_matches_reading_each(tmp_path: Path) -> None:
    path, commit = _repository(tmp_path)
    paths = [f"environments/staging/workflows/wf-{i:03d}.yaml" for i in range(vcs.MANY_PATHS + 12)]
    paths += [
        "environments/staging/environment.yaml",
        "environments/staging/deep/er/x.yaml",
        "environments/staging/deep",  # a folder, not a file
        "environments/staging/link.yaml",
        "environments/production/workflows/wf-000.yaml",  # no such folder
        "empty",
        "tab\tand ü.yaml",
        "missing.yaml",
    ]
    with Git(path) as g:
        many = g.blobs_at(commit, paths)  # folder by folder
        each = {p: g.blob_at(commit, p) for p in paths if p != "environments/staging/deep"}
        few = {p: g.blobs_at(commit, [p, "missing.yaml"])[p] for p in paths}  # by cat-file
    assert many == few and each == {p: d for p, d in many.items() if p in each}
    assert many["environments/staging/workflows/wf-000.yaml"] == b"n: 0\n"
    assert many["environments/staging/workflows/wf-075.yaml"] is None  # past the last
    assert many["environments/staging/link.yaml"] == b"environment.yaml"
    assert many["environments/staging/deep"] is None and many["empty"] == b""
    assert many["tab\tand ü.yaml"] == b"odd\n"


def test_writing_many_files_at_once_makes_the_tree_git_makes(tmp_path: Path) -> None:
    path, commit = _repository(tmp_path)
    changes: dict[str, bytes | None] = {
        f"environments/staging/workflows/wf-{i:03d}.yaml": f"changed {i}\n".encode()
        for i in range(0, vcs.MANY_PATHS + 10, 3)
    }
    changes["environments/staging/workflows/wf-001.yaml"] = None  # removed
    changes["environments/production/workflows/new.yaml"] = b"new\n"  # a new folder
    changes["empty"] = b""
    with Git(path) as g:
        made = g.commit_files("refs/heads/made", commit, changes, "many", new_ref=True)
        one_each = [g.hash_blob(b"a\n"), g.hash_blob(b""), g.hash_blob(b"a\n")]
        assert g.hash_blobs([b"a\n", b"", b"a\n"]) == one_each
    for rel, data in changes.items():
        if data is None:
            (path / rel).unlink()
        else:
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(data)
    by_git = commit_all(path, "the same by hand")
    assert git(path, "rev-parse", f"{made}^{{tree}}") == git(
        path, "rev-parse", f"{by_git}^{{tree}}"
    )

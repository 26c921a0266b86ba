"""A repository read again and again, as the daemon does each cycle: tree listings are
kept from one cycle to the next, so listing a new commit costs what changed since the
last one, not the size of the repository.

A listing at a new commit is the last listing patched with `git diff-tree` between the
two commits. Objects in git never change under their id, so nothing kept can be stale; a
listing whose commit git no longer has (history rewritten and collected) is read again in
full. (Blob contents are not kept here: a snapshot reads only those not parsed already;
see `layout.Blobs`.)
"""

from __future__ import annotations

from pathlib import Path

from loomgit.errors import GitError
from loomgit.vcs import MODE_SUBMODULE, Git, TreeEntry

KEEP_LISTINGS = 8  # per path within a cycle: one for each branch a branches layout reads


class GitCache:
    """What a `CachingGit` keeps between cycles; call `retain` after each one."""

    def __init__(self) -> None:
        # path -> (commit, entries by path), the most recently read first
        self.listings: dict[str, list[tuple[str, dict[str, TreeEntry]]]] = {}
        self.used: set[tuple[str, str]] = set()  # (path, commit) listed since `retain`
        self.patched = 0  # listings read as a diff against the last one
        self.listed = 0  # listings read in full

    def retain(self) -> None:
        """Keeps the listings read since the last call (at least the latest per path)."""
        for path, kept in self.listings.items():
            kept[:] = [(c, e) for c, e in kept if (path, c) in self.used] or kept[:1]
        self.used.clear()


class CachingGit(Git):
    """`Git`, with `ls_tree` served from a `GitCache` where it can be."""

    def __init__(self, toplevel: Path, cache: GitCache) -> None:
        super().__init__(toplevel)
        self.cache = cache

    def ls_tree(self, commit: str, path: str = "") -> list[TreeEntry]:
        kept = self.cache.listings.setdefault(path, [])
        entries = next((e for c, e in kept if c == commit), None)
        if entries is None and kept:
            entries = self._patched(kept[0][0], kept[0][1], commit, path)
        if entries is None:
            entries = {e.path: e for e in super().ls_tree(commit, path)}
            self.cache.listed += 1
        kept[:] = [(commit, entries), *((c, e) for c, e in kept if c != commit)][:KEEP_LISTINGS]
        self.cache.used.add((path, commit))
        return list(entries.values())

    def _patched(
        self, old: str, entries: dict[str, TreeEntry], commit: str, path: str
    ) -> dict[str, TreeEntry] | None:
        args = ["diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, commit]
        try:
            out = self.run(*args, *(["--", path] if path else []))
        except GitError:
            return None  # the old commit is gone: list in full
        fields = out.split(b"\0")
        changed = dict(entries)
        added = False
        for i in range(0, len(fields) - 1, 2):
            meta, name = fields[i].decode(), fields[i + 1].decode("utf-8", "surrogateescape")
            _, mode, _, sha, status = meta.lstrip(":").split(" ")
            if status == "D":
                changed.pop(name, None)
                continue
            kind = "commit" if mode == MODE_SUBMODULE else "blob"
            added |= name not in changed
            changed[name] = TreeEntry(mode, kind, sha, name)
        if added:  # git's order: by path, as bytes
            ordered = sorted(changed, key=lambda p: p.encode("utf-8", "surrogateescape"))
            changed = {p: changed[p] for p in ordered}
        self.cache.patched += 1
        return changed

"""Bad input to the promotion commands: a one-line error and exit 1 or 2, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Result, git
from pipeline import Pipeline
from test_promotion import V2

BAD = [
    (["promote", "hello", "--to", "qa"], 2, "unknown environment 'qa'"),
    (["activate", "hello", "--env", "prod"], 2, "hint: did you mean production? environments:"),
    (["promote", "--to", "staging"], 2, "name the workflows to promote, or pass --all"),
    (["promote", "hello", "--all", "--to", "staging"], 2, "not both"),
    (["promote", "hello", "--to", "staging", "--notes", "a", "--notes-file", "-"], 2, "not both"),
    (
        ["promote", "hello", "--to", "staging", "--branch", "bad..name"],
        2,
        "not a valid branch name",
    ),
    (["promote", "hello", "--to", "staging", "--branch", "-x"], 2, "not a valid branch name"),
    (
        ["activate", "ghost", "--env", "development"],
        1,
        "ghost is not in development\nhint: add environments/development/workflows/ghost.yaml"
        " and commit it\n",
    ),
    # A bad branch name is refused even when the command would have nothing to do.
    (["deactivate", "hello", "--env", "development", "--branch", "a b"], 2, "not a valid"),
    (["rollback", "hello", "--env", "staging", "--branch", "x.lock"], 2, "not a valid branch"),
    (["activate", "hello", "--env", "staging", "--format", "xml"], 2, "'xml' is not one of"),
    (
        ["rollback", "hello", "--env", "staging", "--to-version", "0"],
        2,
        "'0' is not a version; give its number, as 3 or v3",
    ),
    (["rollback", "hello", "--env", "staging", "--to-version", "v"], 2, "'v' is not a version"),
    (["rollback", "hello", "--env", "staging", "--to-version", "1.5"], 2, "'1.5' is not a"),
    # An unknown option that begins a known one is answered with it.
    (
        ["rollback", "hello", "--env", "staging", "--to", "1"],
        2,
        "error: no such option '--to' (did you mean '--to-version'?)\n"
        "hint: `loomgit rollback --help` lists its options, with examples\n",
    ),
    (["show", "hello", "--ver", "1"], 2, "(did you mean '--version'?)"),
    (["promote", "hello", "--to", "staging", "--bogus"], 2, "error: no such option '--bogus'\n"),
    (["show", "ghost"], 1, "ghost is not in development"),
    (["show", "hello", "--version", "1"], 1, "revisions, not versions"),
    (["diff", "ghost", "--from", "development", "--to", "staging"], 1, "ghost is not in"),
    (
        ["diff", "hello", "--from", "staging", "--to", "production"],
        1,
        "hint: promote it to staging first: loomgit promote hello --to staging",
    ),
    (
        ["diff", "hello", "--from", "production", "--to", "staging"],
        2,
        "--to staging does not come after --from production",
    ),
    (["diff", "hello", "--from", "staging", "--to", "staging"], 2, "does not come after"),
    (["diff", "hello", "--to", "development"], 2, "development is the first environment"),
    (["revisions", "ghost"], 1, "no revisions"),
    (["restore", "hello", "no-such-rev"], 2, "unknown revision 'no-such-rev'"),
    (["history", "--env", "qa"], 2, "unknown environment"),
    (["check-promotion", "--base", "nope"], 2, "unknown revision 'nope'"),
    (["check-promotion", "--base", "-x"], 2, ""),
    # A range or a revision git reads as several commits is not one commit.
    (["check-promotion", "--base", "HEAD~1..HEAD"], 2, "'HEAD~1..HEAD' is a range"),
    (["validate", "--rev", "HEAD...HEAD"], 2, "'HEAD...HEAD' is a range"),
    (["validate", "--rev", "HEAD^@"], 2, "unknown revision 'HEAD^@'"),
    (["restore", "hello", "HEAD^!"], 2, "unknown revision 'HEAD^!'"),
    # Something git knows that is not a commit is named for what it is.
    (["validate", "--rev", "HEAD^{tree}"], 2, "'HEAD^{tree}' names a folder (a git tree), not"),
    (["check-promotion", "--base", "HEAD:loomgit.yaml"], 2, "names a file (a git blob), not a"),
    # A path or a name no workflow can have is refused as such, before anything is read.
    (["promote", "hello", "../../etc", "--to", "staging"], 2, "'../../etc' is not a workflow"),
    (["activate", "Hello", "--env", "staging"], 2, "'Hello' is not a workflow name"),
    (["deactivate", "a/b", "--env", "staging"], 2, "'a/b' is not a workflow name"),
    (["rollback", "-", "--env", "staging"], 2, "'-' is not a workflow name"),
    (["show", "hello.yaml"], 2, "'hello.yaml' is not a workflow name"),
    (["diff", "..", "--from", "development", "--to", "staging"], 2, "'..' is not a workflow"),
    (["history", "hello/"], 2, "'hello/' is not a workflow name"),
    (["revisions", " hello"], 2, "' hello' is not a workflow name"),
    (["restore", "x" * 64, "HEAD"], 2, "is not a workflow name"),
    (["run", "../hello"], 2, "'../hello' is not a workflow name"),
    # An environment typed as a word, not as its option, is shown as the option.
    (
        ["activate", "hello", "staging"],
        2,
        "error: missing option --env ('staging' was taken as one word too many)\n"
        "hint: loomgit activate hello --env staging --repo ",
    ),
    (["promote", "hello", "staging"], 2, "hint: loomgit promote hello --to staging --repo "),
    (["promote", "hello", "greet", "staging"], 2, "loomgit promote hello greet --to staging"),
    (["activate", "hello", "--", "staging"], 2, "loomgit activate hello --env staging -- --repo"),
    # The word that was one too many, not an option's value that reads the same.
    (
        ["activate", "hello", "staging", "--branch", "staging"],
        2,
        "hint: loomgit activate hello --env staging --branch staging --repo",
    ),
    (
        ["promote", "hello", "staging", "--branch", "staging"],
        2,
        "hint: loomgit promote hello --to staging --branch staging --repo",
    ),
    (
        ["diff", "hello", "staging", "--format", "json"],
        2,
        "hint: loomgit diff hello --to staging --format json --repo ",
    ),
    (["credentials", "copy", "db", "staging"], 2, "loomgit credentials copy db --from staging"),
    (["promote", "hello"], 2, "error: missing option '--to'\n"),
    (["activate", "--env", "staging"], 2, "error: missing argument 'WORKFLOW'\n"),
    # A typo of a workflow the environment has is named in the hint.
    (["promote", "helo", "--to", "staging"], 1, "hint: did you mean hello?"),
    (["activate", "hellow", "--env", "development"], 1, "hint: did you mean hello?"),
    (["show", "hallo"], 1, "hint: did you mean hello?"),
    (["diff", "hell", "--from", "development", "--to", "staging"], 1, "did you mean hello?"),
    (["revisions", "helo"], 1, "hint: did you mean hello?"),
    # An empty value (a shell variable unset) is not read as the option left out.
    (["show", "hello", "--env", ""], 2, "error: --env was given an empty value\n"),
    (
        ["promote", "hello", "--to", "staging", "--branch", ""],
        2,
        "hint: leave --branch out, or give it a value; is a shell variable unset?",
    ),
    (["promote", "hello", "--to", ""], 2, "hint: give --to a value; is a shell variable unset?"),
    (["credentials", "list", "--env="], 2, "error: --env was given an empty value"),
    (
        ["status", "--server", "http://127.0.0.1:9", "--wait", "--env", "staging", "--env", ""],
        2,
        "error: --env was given an empty value",
    ),
]


@pytest.fixture
def pipe(
    tmp_path: Path, cli: Callable[..., Result], age_key: AgeKey, greeter_file: bytes
) -> Pipeline:
    return Pipeline.create(tmp_path, "directories", cli, age_key, greeter_file)


@pytest.mark.parametrize(("args", "code", "says"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input(pipe: Pipeline, args: list[str], code: int, says: str) -> None:
    before = pipe.snapshot()
    result = pipe.run(*args)
    assert result.code == code, result.out + result.err
    assert says in result.err
    assert pipe.snapshot() == before


def test_empty_notes_and_help_beside_an_empty_value_are_no_error(pipe: Pipeline) -> None:
    """Notes are free text, so empty ones are notes left empty; --help answers anyway."""
    result = pipe.run("show", "hello", "--env", "", "--help")
    assert result.code == 0 and result.out.startswith("Usage: loomgit show"), result.err
    result = pipe.run("promote", "hello", "--to", "staging", "--notes", "")
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["executions", "--workflow", ""], "error: --workflow was given an empty value\n"),
        (["executions", "show", "--state-dir", "", "01ABCDEF"], "error: --state-dir was given"),
    ],
)
def test_an_empty_path_or_filter_is_refused(
    cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    says: str,
) -> None:
    """An empty --state-dir would be the current folder; an empty filter matches nothing."""
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.code == 2 and result.err.startswith(says), result.err
    assert list(tmp_path.iterdir()) == []


def test_an_error_quoting_a_control_character_stays_one_line(pipe: Pipeline) -> None:
    result = pipe.run("validate", "--rev", "main\n\x1b[2Jx")
    assert (result.code, result.err) == (2, "error: 'main\\n\\x1b[2Jx' is not a valid revision\n")


def test_notes_that_are_not_text_are_refused(pipe: Pipeline, tmp_path: Path) -> None:
    binary = tmp_path / "notes.bin"
    binary.write_bytes(b"\xff\xfe\x00 not text \xc3\x28")
    before = pipe.snapshot()
    result = pipe.run("promote", "hello", "--to", "staging", "--notes-file", str(binary))
    assert (result.code, result.err) == (2, f"error: --notes-file {binary} is not UTF-8 text\n")
    assert pipe.snapshot() == before


def test_a_git_process_holding_the_index_stops_a_commit_before_it_is_written(
    pipe: Pipeline,
) -> None:
    lock = pipe.path / ".git" / "index.lock"
    lock.touch()
    before = pipe.snapshot()
    result = pipe.run("promote", "hello", "--to", "staging")
    assert result.code == 2 and "index.lock exists); nothing was written" in result.err
    assert pipe.snapshot() == before
    lock.unlink()
    assert pipe.run("promote", "hello", "--to", "staging").code == 0


def test_a_commit_whose_files_cannot_reach_the_work_tree_says_it_stands(pipe: Pipeline) -> None:
    """An empty folder where the promoted file goes (git does not see it, so the path is
    clean): the commit is made, and the error says so and how to mend the work tree."""
    (pipe.path / "environments/staging/workflows/hello.yaml").mkdir(parents=True)
    result = pipe.run("promote", "hello", "--to", "staging")
    assert result.code == 2
    assert "but its files could not be written into the work tree" in result.err
    assert "hint: `git checkout HEAD -- environments/staging/workflows/hello.yaml" in result.err
    (pipe.path / "environments/staging/workflows/hello.yaml").rmdir()
    git(pipe.path, "checkout", "HEAD", "--", ".")
    assert git(pipe.path, "status", "--porcelain") == ""
    assert "Promote hello v1 to staging" in git(pipe.path, "log", "-1", "--format=%s")


def test_detached_head_is_read_and_written_only_onto_a_new_branch(pipe: Pipeline) -> None:
    """A CI job checks a pull request out at a detached HEAD: every command reads and
    reviews what is there (they all refused before); a commit needs a branch, so it is
    refused, writing nothing, unless --branch names a new one."""
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    git(pipe.path, "checkout", "-q", "--detach")
    head = git(pipe.path, "rev-parse", "HEAD")
    status = pipe.run("status")
    assert status.code == 0 and f"{head[:12]} (HEAD)" in status.out
    for read in (
        ("diff", "hello", "--to", "production"),
        ("show", "hello", "--env", "staging"),
        ("history",),
        ("revisions", "hello"),
        ("credentials", "list"),
        ("keys", "list"),
        ("activate", "hello", "--env", "staging", "--dry-run"),
    ):
        result = pipe.run(*read)
        assert result.code == 0, (read, result.err)
    dry = pipe.run("promote", "hello", "--to", "production", "--dry-run")
    assert dry.code == 0 and dry.out.startswith("would commit on HEAD: Promote hello v1")
    wip = pipe.path / pipe.rel("development", "workflows/hello.yaml")
    wip.write_text(wip.read_text() + "# unfinished\n")  # restore would back it up first
    before = pipe.snapshot()
    for write in (
        ("promote", "hello", "--to", "production"),
        ("activate", "hello", "--env", "staging"),
        ("restore", "hello", "HEAD"),
    ):
        result = pipe.run(*write)
        assert result.code == 2 and result.err.splitlines() == [
            "error: HEAD is detached; loomgit commits onto a branch",
            "hint: check out a branch first (git switch main); promote, activate, rollback and "
            "restore can write onto a new one with --branch NAME",
        ], (write, result.err)
        assert pipe.snapshot() == before, write
    made = pipe.run("promote", "hello", "--to", "production", "--branch", "promote/hello")
    assert made.code == 0, made.err
    assert made.err.endswith(  # the target's branch is not known at a detached HEAD
        "next: push it (`git push -u origin promote/hello`) and open a pull request with this"
        " title and body\n"
    )
    assert git(pipe.path, "rev-parse", "promote/hello^") == head
    assert git(pipe.path, "rev-parse", "HEAD") == head


def test_notes_file_and_json_output(pipe: Pipeline, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("From a file\n\nwith two paragraphs\n")
    result = pipe.run(
        "promote", "hello", "--to", "staging", "--notes-file", str(notes), "--format", "json"
    )
    assert result.code == 0
    out = json.loads(result.out)
    assert out["subject"] == "Promote hello v1 to staging" and len(out["commit"]) == 40
    assert "From a file\n\nwith two paragraphs" in pipe.message("staging")


def test_no_validate_skips_only_the_final_validation(pipe: Pipeline) -> None:
    base = pipe.tip("staging")
    pipe.edit("hello", "a: [\n")  # breaks HEAD's validation, but is a legal commit
    assert pipe.run("check-promotion", "--base", base).code == 1
    only = pipe.run("check-promotion", "--base", base, "--no-validate")
    assert only.code == 0
    tip = pipe.tip("development")[:12]
    assert only.out.splitlines() == [
        f"  {tip} edit hello — hello edited in development",
        f"ok: 1 commit {base[:12]}..{tip}: every change is legal (HEAD not validated here)",
    ]


def test_option_like_revision_is_refused(pipe: Pipeline) -> None:
    before = pipe.snapshot()
    result = pipe.cli("restore", "--repo", pipe.path, "hello", "--", "--output=/tmp/x")
    assert result.code == 2 and "not a valid revision" in result.err
    assert pipe.snapshot() == before


def test_invalid_record_is_an_error_not_a_crash(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    state = pipe.path / "environments/staging/environment.yaml"
    state.write_text(state.read_text().replace("version: 1", "version: abc"))
    from conftest import commit_all

    commit_all(pipe.path, "break the record")
    result = pipe.run("activate", "hello", "--env", "staging")
    assert result.code == 1 and "record of hello in environment.yaml is not valid" in result.err


def test_unwritable_key_path_is_an_error(pipe: Pipeline) -> None:
    result = pipe.run("keys", "generate", "--env", "staging", "--out", "/proc/nope/key")
    assert result.code == 1 and "cannot write /proc/nope/key" in result.err


def test_range_with_a_root_commit(pipe: Pipeline) -> None:
    from conftest import git

    base = pipe.tip("development")
    git(pipe.path, "checkout", "-q", "--orphan", "elsewhere")
    git(pipe.path, "commit", "-q", "-m", "unrelated history")
    result = pipe.run("check-promotion", "--base", base, "--head", "elsewhere", "--no-validate")
    assert result.code == 0, result.err


def test_a_merge_may_only_take_each_sides_records(pipe: Pipeline) -> None:
    """A merge (main into a pull request's branch, to bring it up to date) takes each
    side's commits, which are checked one by one; it passes when git merged the two
    sides' records, and is refused when resolving a conflict made a record neither side
    has (a version typed by hand), which it hid from the check before."""
    bye = HELLO.replace("name: hello", "name: bye").replace("path: hello", "path: bye")
    pipe.edit("bye", bye)
    assert pipe.run("promote", "hello", "bye", "--to", "staging").code == 0
    git(pipe.path, "switch", "-q", "-c", "pr")
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    git(pipe.path, "switch", "-q", "main")
    pipe.edit("bye", bye.replace("      type: log\n", "      type: log\n      timeout: 5s\n"))
    assert pipe.run("promote", "bye", "--to", "staging").code == 0
    git(pipe.path, "switch", "-q", "pr")
    git(pipe.path, "merge", "-q", "--no-edit", "main")
    check = pipe.run("check-promotion", "--base", "main")
    assert check.code == 0, check.out
    assert " — hello v2 promoted to staging\n" in check.out
    assert "Merge branch 'main' into pr — a merge, adding nothing of its own\n" in check.out
    git(pipe.path, "reset", "-q", "--hard", "HEAD^")
    git(pipe.path, "merge", "-q", "--no-commit", "main")
    state = pipe.path / "environments/staging/environment.yaml"
    state.write_text(state.read_text().replace("version: 2", "version: 9", 1))
    git(pipe.path, "commit", "-q", "-am", "Merge main")
    check = pipe.run("check-promotion", "--base", "main", "--no-validate")
    merge = git(pipe.path, "rev-parse", "HEAD")[:12]
    assert check.code == 1
    assert check.out.startswith(
        f"environments/staging/environment.yaml: error[LG600]: commit {merge} (a merge): the"
        " record of bye in staging is neither side's; resolve a conflict by taking one side's"
        " record, then promote, activate or roll back again\n"
    ), check.out

"""environment.yaml editing: the canonical fast path and the comment-keeping fallback
must agree with a full parse."""

from __future__ import annotations

from datetime import UTC, datetime

from loomgit import envstate
from loomgit.models import WorkflowState

A = WorkflowState(
    active=True,
    version=3,
    digest="sha256:" + "a" * 64,
    promoted_from="staging",
    source_commit="b" * 40,
    promoted_by="Dana <d@example.com>",
    promoted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    notes=("long " * 2000) + "\n    version: 9\nactive: false",
)
B = WorkflowState(active=False, version=1, digest="sha256:" + "c" * 64, rolled_back_from=2)


def test_render_round_trips_and_summaries_agree() -> None:
    data = envstate.render("production", {"a": A, "b": B}).encode()
    assert envstate.records(data) == {"a": A, "b": B}
    assert envstate.split(data.decode()) is not None
    assert envstate.record(data, "a") == A
    assert envstate.summaries(data) == {
        "a": envstate.Summary(3, True, None),
        "b": envstate.Summary(1, False, 2),
    }


def test_with_records_replaces_one_block() -> None:
    data = envstate.render("production", {"a": A, "b": B}).encode()
    changed = envstate.with_records(data, "production", {"b": A.model_copy(update={"notes": "x"})})
    assert envstate.records(changed)["b"].notes == "x"
    assert envstate.records(changed)["a"] == A
    old, new = envstate.changed_records(data, changed)
    assert set(old) == set(new) == {"b"}
    removed = envstate.with_records(changed, "production", {"a": None, "b": None})
    assert envstate.records(removed) == {}


def test_hand_written_file_keeps_its_comments() -> None:
    data = (
        b"apiVersion: loomgit/v1\nkind: Environment\nworkflows:\n"
        b"  # the order flow\n  a: {active: true, version: 1}\n"
    )
    assert envstate.split(data.decode()) is None
    changed = envstate.with_records(data, "staging", {"a": B})
    assert b"# the order flow" in changed
    assert envstate.records(changed)["a"] == B
    assert envstate.summaries(data)["a"] == envstate.Summary(1, True, None)


def test_flow_style_blocks_are_read_properly() -> None:
    data = (
        b"apiVersion: loomgit/v1\nkind: Environment\nworkflows:\n"
        b"  a: {active: true}\n  b:\n    active: false\n"
    )
    assert envstate.summaries(data) == {
        "a": envstate.Summary(None, True, None),
        "b": envstate.Summary(None, False, None),
    }


def test_only_a_canonical_section_is_cut() -> None:
    """The fast cut takes a file only where it cannot read it otherwise than a parser
    would; any other shape goes to the full parser (None)."""
    head = "apiVersion: loomgit/v1\nkind: Environment\n"
    cut = envstate.split(head + "workflows:\n  a:\n    active: true\n  b-1: {version: 2}\n")
    assert cut == envstate.Blocks(
        head, {"a": "  a:\n    active: true\n", "b-1": "  b-1: {version: 2}\n"}
    )
    assert envstate.split("workflows:\n  a:\n    active: true") == envstate.Blocks(
        "", {"a": "  a:\n    active: true\n"}
    )
    assert envstate.split(head + "workflows: {}\n") == envstate.Blocks(head, {})
    for text in (
        "kind: Environment\n",  # no workflows
        "workflows: {}\n  a:\n    active: true\n",  # more after an empty mapping
        "workflows:\n  # a comment\n  a:\n    active: true\n",
        "workflows:\n  a:\n\n    active: true\n",  # a blank line inside a block
        "workflows:\n  a:\n    version: 1\n  a:\n    version: 2\n",  # a name twice
        "workflows:\n\ta:\n",
        "workflows:\n  A:\n    active: true\n",
        "kind: E\rworkflows:\n  a:\n    active: true\n",  # a line broken by CR alone
        "workflows:\r\n  a:\n    active: true\n",
        "workflows: \u00a0\nworkflows:\n  a:\n    active: true\n",  # the key twice
    ):
        assert envstate.split(text) is None, text

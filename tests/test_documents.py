"""The document cache: parsed once by blob, trimmed to what the current snapshot holds."""

from __future__ import annotations

from conftest import state_yaml

from loomgit.documents import DocumentCache, blob_id


def _state(versions: dict[str, int]) -> bytes:
    entries = {n: {"version": v, "active": "true"} for n, v in versions.items()}
    return state_yaml("staging", entries).encode()


def test_highest_versions_grow_with_history_and_start_over_when_it_is_rewritten() -> None:
    docs = [_state({"a": 1}), _state({"a": 2, "b": 1}), _state({"a": 1, "b": 3})]
    blobs = {blob_id(d): d for d in docs}
    ids = list(blobs)
    reads: list[list[str]] = []

    def read(wanted: list[str]) -> dict[str, bytes]:
        reads.append(wanted)
        return {b: blobs[b] for b in wanted}

    cache = DocumentCache()
    assert cache.highest_versions("staging", ids[:2], read) == {"a": 2, "b": 1}
    assert cache.highest_versions("staging", ids, read) == {"a": 2, "b": 3}
    assert reads[-1] == [ids[2]]  # only the new version was read
    assert cache.highest_versions("staging", ids, read) == {"a": 2, "b": 3}
    assert len(reads) == 2  # nothing new: nothing read
    # A rewritten history lost the version holding a v2: the maximum is read again.
    assert cache.highest_versions("staging", [ids[0], ids[2]], read) == {"a": 1, "b": 3}
    assert reads[-1] == [ids[0], ids[2]]


def test_retain_drops_old_environment_files_but_keeps_small_documents() -> None:
    from loomgit.models import EnvironmentState, Variables

    cache = DocumentCache()
    old, new = _state({"a": 1}), _state({"a": 2})
    variables = b"apiVersion: loomgit/v1\nkind: Variables\nvariables: {x: 1}\n"
    for data in (old, new):
        cache.model(EnvironmentState, blob_id(data), data)
    cache.model(Variables, blob_id(variables), variables)
    cache.retain({blob_id(new)})
    misses = cache.misses
    cache.model(EnvironmentState, blob_id(new), new)
    cache.model(Variables, blob_id(variables), variables)
    assert cache.misses == misses
    cache.model(EnvironmentState, blob_id(old), old)
    assert cache.misses == misses + 1


def test_parsed_workflows_share_their_strings_and_field_name_sets() -> None:
    """What keeps 10,000 served workflows small (docs/benchmarks.md): keys and short
    values are one object across documents, and so is each set of given field names."""
    from conftest import HELLO

    from loomgit.documents import parse_workflow

    first = parse_workflow(HELLO.encode()).model
    second = parse_workflow(HELLO.replace("name: hello", "name: other").encode()).model
    assert first is not None and second is not None
    one, two = first.spec.steps[0], second.spec.steps[0]
    assert one.type is two.type and next(iter(one.with_)) is next(iter(two.with_))
    assert one.model_fields_set is two.model_fields_set
    assert first.metadata.name != second.metadata.name
    # A copy with changes gets its own set: the shared one is never added to.
    changed = one.model_copy(update={"on_error": "continue"})
    assert "on_error" in changed.model_fields_set
    assert "on_error" not in one.model_fields_set and one.model_fields_set is two.model_fields_set

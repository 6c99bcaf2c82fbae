"""What a large load keeps per file is compact, and gives the same answers as the full form.

Status records keep their document as JSON text, executions share their models' field-name
sets and repeated strings, states read back intern theirs: none of it may change what is
read back — the document, the state, a dump of the model — whether the file came from YAML
or from the parse store, and a stored row that is not exactly one document stays a miss.
Real Git repositories and real SQLite files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.declare.model import WorkflowExecution, share_fields_sets
from reconciler.declare.statusdoc import StatusRecord, document_text, documents, read_status_document, record_of
from reconciler.record.status import from_document
from reconciler.source.gitsource import GitSource
from reconciler.source.parsecache_status import _decode_statuses, status_row
from reconciler.source.parsestore import StoredText
from reconciler.views.plan import states_from
from tests.conftest import CATALOG, WorkRepo, execution_yaml

STATUS = ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecutionStatus\nmetadata: {{name: {n}}}\n"
          "status:\n  phase: Completed\n  reason: Succeeded\n  message: \"caf\\u00e9 {n}\"\n"
          "  observedRevision: abc\n  specHash: x{n}\n"
          "  executionRef: {{kind: PipelineRun, namespace: ns, name: run-{n}, uid: u-{n}}}\n"
          "  executionStatus: {{attempts: 3, ratio: 0.5, ok: true, none: null}}\n"
          "  conditions:\n  - {{type: Ready, status: 'True', reason: Succeeded, message: done, "
          "lastTransitionTime: '2026-01-01T00:00:00Z'}}\n")


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    repo = make_repo("repo")
    files = {"workflows/w.yaml": CATALOG}
    for i in range(5):
        files[f"executions/e{i}.yaml"] = execution_yaml(f"e{i}", target=f"ns/Deployment/app-{i}")
        files[f"status/e{i}.yaml"] = STATUS.format(n=f"e{i}")
    repo.commit("seed", **files)
    return repo


def _expected(repo: WorkRepo) -> dict[str, Any]:
    out = {}
    for i in range(5):
        path = f"status/e{i}.yaml"
        data, why = read_status_document(STATUS.format(n=f"e{i}").encode(), path)
        assert why is None and data is not None
        out[f"e{i}"] = data
    return out


@pytest.mark.parametrize("store", [False, True], ids=["yaml", "store"])
def test_a_record_gives_back_its_whole_document_parsed_or_stored(repo: WorkRepo, tmp_path: Path,
                                                                 store: bool) -> None:
    if store:  # a first process fills the store; the second reads every status from it
        GitSource(str(repo.path), cache_dir=tmp_path).load(GitSource(str(repo.path), cache_dir=tmp_path).fetch())
    source = GitSource(str(repo.path), cache_dir=tmp_path)
    decl = source.load(source.fetch())
    assert source.parsed.status_docs.parses == (0 if store else 5)
    want = _expected(repo)
    assert {name: record.raw for name, record in decl.statuses.items()} == want
    assert all(isinstance(record.document, str) for record in decl.statuses.values())
    states = states_from(decl)
    assert states == {name: from_document(data) for name, data in want.items()}
    assert states["e3"].execution_ref is not None and states["e3"].execution_ref.name == "run-e3"
    assert states["e3"].message == "café e3"


def test_a_stored_row_that_is_not_exactly_one_document_is_a_miss(repo: WorkRepo, tmp_path: Path) -> None:
    first = GitSource(str(repo.path), cache_dir=tmp_path)
    want = first.load(first.fetch())
    assert first.parsed.store is not None
    db = sqlite3.connect(first.parsed.store.path)
    rows = db.execute("SELECT key, value FROM parsed").fetchall()
    # each row rewritten in the form a status row takes when a record field holds a NUL,
    # {"d": document}: the two left as they are must be read back as they would be parsed
    status_rows = [(k, '{"d":' + v.split("\0", 7)[7] + "}") for k, v in rows if v.startswith("S1\0")]
    assert len(status_rows) == 5 and all(v.startswith('{"d":{"apiVersion"') for _, v in status_rows)
    # a document followed by more text, a wrapper with more keys, a document split across
    # two rows: each decodes (in a batch, or after the prefix) to something else than one document
    tampered = [status_rows[0][1][:-1] + ',"x":1}', status_rows[1][1][:-2] + '},"' + "}",
                status_rows[2][1][:-1] + ',"junk"}', status_rows[3][1], status_rows[4][1]]
    for (key, _), value in zip(status_rows, tampered, strict=True):
        db.execute("UPDATE parsed SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()
    second = GitSource(str(repo.path), cache_dir=tmp_path)
    got = second.load(second.fetch())
    assert second.parsed.status_docs.parses == 3  # the three tampered rows: parsed again from Git
    assert [(n, r, r.raw) for n, r in got.statuses.items()] == [(n, r, r.raw) for n, r in want.statuses.items()]


@pytest.mark.parametrize(("reason", "as_text"), [("Succeeded", True), ("café ✓", True), ("with\0nul", False)])
def test_a_status_row_gives_back_the_record_it_was_written_from(reason: str, as_text: bool) -> None:
    """A status row is the record's fields and the document's text, NUL-separated; a field
    that holds a NUL cannot be written so and the row is the whole document instead."""
    data = {"apiVersion": "kubernaut.ai/v1alpha1", "kind": "WorkflowExecutionStatus", "metadata": {"name": "e1"},
            "status": {"phase": "Completed", "reason": reason, "specHash": "h1",
                       "executionRef": {"kind": "PipelineRun", "namespace": "ns", "name": "run-e1", "uid": "u"}}}
    record = record_of(data, "status/e1.yaml")
    row = status_row(record)
    assert isinstance(row, StoredText) is as_text
    text = row if isinstance(row, str) else json.dumps(row, separators=(",", ":"), ensure_ascii=False)
    [(_, (kept, _))] = list(_decode_statuses([(b"k", text)], {b"k": ("status/e1.yaml", "0" * 40)}))
    assert kept is not None and kept[0] == record and kept[0].raw == data
    [(_, (kept, _))] = list(_decode_statuses([(b"k", text)], {b"k": ("status/e2.yaml", "0" * 40)}))
    assert kept is None  # another file's row: a miss


@pytest.mark.parametrize("data, kept_as_text", [
    ({"kind": "WorkflowExecutionStatus", "status": {"phase": "Completed", "message": "ünïcode"}}, True),
    ({"kind": "WorkflowExecutionStatus", "status": {"executionStatus": {1: "int key"}}}, False),
    ({"kind": "WorkflowExecutionStatus", "status": {"executionStatus": {"x": float("nan")}}}, False),
    ({"kind": "WorkflowExecutionStatus", "status": {"executionStatus": {"big": 10 ** 30, "f": 1.5}}}, True),
])
def test_a_document_json_cannot_hold_exactly_is_kept_as_it_is(data: dict[str, Any], kept_as_text: bool) -> None:
    kept = document_text(data)
    assert isinstance(kept, str) is kept_as_text
    record = StatusRecord("n", "status/n.yaml", "Completed", document=kept)
    got = record.raw
    if kept_as_text:
        assert got == data and got is not data
    else:
        assert got is data
    assert [d for _, d in documents([record, record], chunk=1)] == [got, got]


def test_documents_decode_in_chunks_and_keep_the_order() -> None:
    records = [record_of({"kind": "WorkflowExecutionStatus", "metadata": {"name": f"e{i}"},
                          "status": {"phase": "Completed"}}, f"status/e{i}.yaml") for i in range(7)]
    mixed = [*records[:3], StatusRecord("odd", "status/odd.yaml", "Completed", document={"a": {1: 2}}), *records[3:]]
    for chunk in (1, 2, 3, 100):
        got = list(documents(mixed, chunk=chunk))
        assert [r for r, _ in got] == mixed
        assert [d for _, d in got] == [r.raw for r in mixed]


def test_shared_fields_sets_change_nothing_that_is_read() -> None:
    doc = json.loads(json.dumps({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "WorkflowExecution", "metadata": {"name": "a"},
        "spec": {"workflowRef": {"workflowId": "w", "version": "1.0.0"}, "targetResource": "ns/Deployment/a",
                 "remediationRequestRef": {"name": "rr"}, "executionConfig": {"timeout": "5m"},
                 "parameters": {"A": "1"}}}))
    plain = WorkflowExecution.model_validate(doc)
    shared = share_fields_sets(WorkflowExecution.model_validate(doc))
    other = share_fields_sets(WorkflowExecution.model_validate(doc))
    assert shared == plain
    assert shared.model_dump(exclude_unset=True) == plain.model_dump(exclude_unset=True)
    assert shared.model_dump(by_alias=True) == plain.model_dump(by_alias=True)
    assert shared.spec.model_fields_set == plain.spec.model_fields_set
    assert shared.spec.model_fields_set is other.spec.model_fields_set  # one set for all of them
    with pytest.raises(TypeError):  # never a silent change of another execution's set
        shared.model_copy(update={"kind": "WorkflowExecution"})

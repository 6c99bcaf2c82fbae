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
    status_rows = [(k, v) for k, v in rows if v.startswith('{"d":{"apiVersion"')]
    assert len(status_rows) == 5
    # a document followed by more text, a wrapper with more keys, a document split across
    # two rows: each decodes (in a batch, or after the prefix) to something else than one document
    tampered = [status_rows[0][1][:-1] + ',"x":1}', status_rows[1][1][:-2] + '},"' + "}",
                status_rows[2][1][:-1] + ',"junk"}']
    for (key, _), value in zip(status_rows, tampered, strict=False):
        db.execute("UPDATE parsed SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()
    second = GitSource(str(repo.path), cache_dir=tmp_path)
    got = second.load(second.fetch())
    assert second.parsed.status_docs.parses == 3  # the three tampered rows: parsed again from Git
    assert [(n, r, r.raw) for n, r in got.statuses.items()] == [(n, r, r.raw) for n, r in want.statuses.items()]


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

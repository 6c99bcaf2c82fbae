"""Output injection: repository-controlled text cannot drive a terminal, a CI log or a PR comment.

File names, execution names, messages, status files and commit subjects are written by
whoever opens a pull request. These tests put hostile strings in every one of those places
of a real Git repository (ESC/OSC sequences, ``\\r``, backspace, C1 controls, bidi
overrides, line separators, GitHub Actions workflow commands, rich markup, Markdown table
breakers), run every text command, and check that no raw control character reaches stdout
or stderr, that no line starts a workflow command except the tool's own annotations, that
the Markdown plan has seven cells in every row under two parsers, and that the hostile
text is still *shown* (escaped), not dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from reconciler.cli import main
from reconciler.safetext import (
    clean,
    gh_data,
    gh_property,
    guard,
    is_unsafe,
    json_safe,
    md_code,
    md_text,
    safe_block,
    safe_line,
)
from reconciler.service.logs import JsonFormatter, TextFormatter
from reconciler.simulator import FakeKubeServer
from tests.conftest import CATALOG, WorkRepo, execution_yaml

# -- the pure module, table-driven ------------------------------------------------------------

CLEAN_CASES = [
    ("plain name", "oom-payment-api-2026-11-21", "oom-payment-api-2026-11-21"),
    ("non-ASCII letters and symbols", "café 日本 ✓ ⛔ …", "café 日本 ✓ ⛔ …"),
    ("rich markup is just text", "[bold red]x[/]", "[bold red]x[/]"),
    ("backslash is kept", "a\\b", "a\\b"),
    ("newline", "a\nb", "a\\nb"),
    ("tab", "a\tb", "a\\tb"),
    ("carriage return", "ok\rFORGED", "ok\\rFORGED"),
    ("backspace", "ab\x08\x08", "ab\\x08\\x08"),
    ("NUL", "a\x00b", "a\\x00b"),
    ("ESC CSI clear screen", "\x1b[2J", "\\x1b[2J"),
    ("OSC 8 hyperlink", "\x1b]8;;http://evil\x07x", "\\x1b]8;;http://evil\\x07x"),
    ("DEL", "a\x7f", "a\\x7f"),
    ("C1 CSI and NEL", "\x9b2J\x85", "\\x9b2J\\x85"),
    ("bidi override", "txt\u202eexe", "txt\\u202eexe"),
    ("bidi isolates", "\u2066a\u2069", "\\u2066a\\u2069"),
    ("zero-width and BOM", "a\u200bb\ufeff", "a\\u200bb\\ufeff"),
    ("line and paragraph separators", "a\u2028b\u2029", "a\\u2028b\\u2029"),
    ("tag character above the BMP", "a\U000e0041", "a\\U000e0041"),
    ("lone surrogate of an undecodable byte", "a\udcff", "a\\udcff"),
]


@pytest.mark.parametrize(("case", "raw", "shown"), CLEAN_CASES, ids=[c[0] for c in CLEAN_CASES])
def test_clean(case: str, raw: str, shown: str) -> None:
    assert clean(raw) == shown
    assert clean(shown) == shown  # idempotent: escaping an escaped line changes nothing
    assert not any(is_unsafe(c) for c in clean(raw))


def test_clean_formats_non_strings() -> None:
    assert clean(42) == "42"
    assert clean(["a\nb"]) == "['a\\nb']"  # str() of a list already escapes: nothing left to do
    assert clean({"k": "\x1b"}) == "{'k': '\\x1b'}"


GUARD_CASES = [
    ("workflow command", "::error::x", "\\x3a:error::x"),
    ("after leading spaces (the runner trims them)", "  ::add-mask::x", "  \\x3a:add-mask::x"),
    ("legacy ##[ form", "##[error]x", "\\x23#[error]x"),
    ("legacy form indented", " ##[warning]x", " \\x23#[warning]x"),
    ("colons later in the line", "error: a::b", "error: a::b"),
    ("a single colon", ":x", ":x"),
    ("a heading-like hash", "# x", "# x"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("case", "line", "guarded"), GUARD_CASES, ids=[c[0] for c in GUARD_CASES])
def test_guard(case: str, line: str, guarded: str) -> None:
    assert guard(line) == guarded
    assert not re.match(r"\s*(::|##\[)", guard(line))


@pytest.mark.parametrize(("raw", "line"), [
    ("::error::x", "\\x3a:error::x"),
    ("\t::error::x", "\\t::error::x"),  # the tab is escaped, so the line starts with a backslash
    ("a\n::error::x", "a\\n::error::x"),
    ("\u2028::error::x", "\\u2028::error::x"),
])
def test_safe_line_is_one_line_that_starts_no_command(raw: str, line: str) -> None:
    assert safe_line(raw) == line


def test_safe_block_keeps_the_layout_and_neutralises_each_line() -> None:
    message = "invalid configuration:\n  ::error::x\x1b[2J\n  ok"
    assert safe_block(message) == "invalid configuration:\n  \\x3a:error::x\\x1b[2J\n  ok"


@pytest.mark.parametrize(("raw", "data", "prop"), [
    ("plain", "plain", "plain"),
    ("50%", "50%25", "50%25"),
    ("%0A literal", "%250A literal", "%250A literal"),
    ("a\nb", "a%0Ab", "a%0Ab"),
    ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
    ("x\n::error::y", "x%0A::error::y", "x%0A%3A%3Aerror%3A%3Ay"),
    ("a:b,c", "a:b,c", "a%3Ab%2Cc"),
    ("\x1b[31mred\u202e", "\\x1b[31mred\\u202e", "\\x1b[31mred\\u202e"),
])
def test_github_workflow_command_encoding(raw: str, data: str, prop: str) -> None:
    assert gh_data(raw) == data
    assert gh_property(raw) == prop


@pytest.mark.parametrize(("raw", "text"), [
    ("rollback-deployment@2.0.1", "rollback-deployment@2.0.1"),
    ("a|b", "a\\|b"),
    ("`x`", "\\`x\\`"),
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("**b** _i_ ~~s~~", "\\*\\*b\\*\\* \\_i\\_ \\~\\~s\\~\\~"),
    ("[l](http://x)", "\\[l\\](http://x)"),
    ("a\\b", "a\\\\b"),
    ("a\nb", "a\\\\nb"),  # escaped to "\n", whose backslash is then escaped for Markdown
    ("&amp;", "&amp;amp;"),
])
def test_md_text(raw: str, text: str) -> None:
    assert md_text(raw) == text


@pytest.mark.parametrize(("raw", "in_table", "code"), [
    ("oom", True, "`oom`"),
    ("a`b", True, "``a`b``"),
    ("`a", True, "`` `a ``"),
    ("a``b", True, "```a``b```"),
    ("a|b", True, "`a\\|b`"),
    ("a\\|b", True, "`a\\\\\\|b`"),
    ("a|b", False, "`a|b`"),
    ("<b>", True, "`<b>`"),
    ("a\nb", True, "`a\\nb`"),
])
def test_md_code(raw: str, in_table: bool, code: str) -> None:
    assert md_code(raw, in_table=in_table) == code


MARKDOWN_HOSTILE = ["a|b", "a\\|b", "a\\\\|b", "`", "``|``", "a`b|c", "<script>x</script>", "x\n| y | z |",
                    "[x](http://evil)", "\\", "|", "**x**"]


def gfm_cells(row: str) -> list[str]:
    """Split a table row as cmark-gfm (GitHub) does: a backslash escapes the next punctuation
    character — including another backslash — and any other ``|`` is a cell boundary."""
    cells, current, i = [], "", 0
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and re.match(r"[!-/:-@\[-`{-~]", body[i + 1]):
            current += body[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if current.strip():
        cells.append(current)
    return cells


MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def table_rows(markdown: str) -> list[list[str]]:
    """Rows of every table as markdown-it renders them: the kinds of each row's cells."""
    rows: list[list[str]] = []
    for token in MD.parse(markdown):
        if token.type == "tr_open":
            rows.append([])
        elif token.type in ("td_open", "th_open"):
            rows[-1].append(token.type)
    return rows


@pytest.mark.parametrize("raw", MARKDOWN_HOSTILE)
def test_markdown_cell_escapes_keep_one_value_per_cell(raw: str) -> None:
    table = f"| a | b | c |\n|---|---|---|\n| {md_code(raw)} | {md_text(raw)} | end |\n"
    assert [len(gfm_cells(line)) for line in table.splitlines()] == [3, 3, 3]
    assert table_rows(table) == [["th_open"] * 3, ["td_open"] * 3]
    tokens = MD.parse(table)
    inline = [t for t in tokens if t.type == "inline"][3:]  # the data row's three cells
    codes = [c for c in inline[0].children or [] if c.type == "code_inline"]
    expected = re.sub(r"\\+(?=\|)", lambda m: m.group() * 2, clean(raw))  # see md_code
    assert [c.content for c in codes] == [expected]
    text = "".join(c.content for c in inline[1].children or [] if c.type == "text")
    assert text == clean(raw)  # the text cell renders exactly the (cleaned) value
    assert all(c.type != "html_inline" for t in inline for c in t.children or [])
    assert inline[2].content == "end"


@pytest.mark.parametrize("raw", ["plain", "x\x7f\u202e\u2028\x9b", "a\U000e0001", "a\udcff", "é\n\t\x1b"])
def test_json_safe_escapes_what_ensure_ascii_false_leaves_and_decodes_the_same(raw: str) -> None:
    encoded = json_safe(json.dumps({"v": raw}, ensure_ascii=False))
    assert json.loads(encoded) == {"v": raw}
    assert not any(is_unsafe(c) for c in encoded)
    assert json_safe(json.dumps({"v": raw}, indent=2)).count("\n") == 2  # layout is kept


# -- hostile repositories through the real CLI -----------------------------------------------------

PAYLOADS = {
    "csi": "\x1b[2J\x1b[1;31mRED\x1b[0m",
    "osc8-hyperlink": "\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07",
    "osc-title": "\x1b]0;pwned\x1b\\",
    "cr-backspace-del": "innocent\rFORGED\x08\x08\x7f",
    "c1-controls": "\x9b2J\x85next\x90",
    "bidi-override": "txt\u202eexe\u2066\u200b\u2069",
    "gh-error-after-newline": "\n::error::pwned",
    "gh-add-mask-and-stop": "\n::add-mask::hidden\n  ::stop-commands::tok",
    "gh-command-at-line-start": "::error file=x::pwned",
    "gh-legacy": "##[error]legacy\r\n##[set-output name=a;]b",
    "line-separators": "\u2028::error::ls\u2029::warning::ps",
    "rich-markup": "[bold red]rich markup[/]",
    "markdown": "a|b`c``d\\|<img src=x onerror=alert(1)>**x**",
}

COMMAND_LINE = re.compile(r"^\s*(::|##\[)")
ANNOTATION = re.compile(r"::error file=[^,:]+(,line=\d+(,col=\d+)?)?,title=[^,:]+::\S.*")


@dataclass
class Hostile:
    payload: str
    repo: WorkRepo
    cache: Path
    good_file: str     # a valid execution ("good-one") in a hostile file name
    bad_file: str      # "bad-one": a hostile targetResource
    nameless_file: str  # a hostile metadata.name: the file's name stands in for it
    subject: str       # the commit subject, as Git reports it

    @property
    def shown(self) -> str:
        return clean(self.payload)


def _status(name: str, q: str, phase: str) -> str:
    return f"""\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowExecutionStatus
metadata: {{name: {name}}}
status:
  phase: {phase}
  reason: {q}
  message: {q}
  sync: Synced
  health: Degraded
  targetResource: {q}
  workflow: {q}
  executionRef: {{kind: PipelineRun, namespace: ns, name: {q}}}
  failureDetails: {{reason: {q}, message: {q}, naturalLanguageSummary: {q}, failedTaskName: {q}}}
  skipDetails: {{why: {q}}}
  conditions:
  - {{type: {q}, status: {q}, reason: {q}, message: {q}, lastTransitionTime: '2026-11-14T09:14:41Z'}}
"""


def raw_git(repo: WorkRepo, *args: str) -> str:
    """Git's output as it is (the shared helper's text mode would turn \\r into \\n)."""
    return subprocess.run(["git", *args], cwd=repo.path, check=True, capture_output=True).stdout.decode(
        errors="surrogateescape")


@pytest.fixture(scope="module", params=sorted(PAYLOADS))
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    payload = PAYLOADS[request.param]
    root = tmp_path_factory.mktemp("hostile")
    repo = WorkRepo(root / "repo")
    q = json.dumps(payload)  # a YAML double-quoted scalar takes JSON's escapes
    files = {name: PurePosixPath(f"executions/{name}{payload}.yaml").as_posix()
             for name in ("good", "bad", "nameless")}
    repo.write("workflows/increase-memory-limit.yaml", CATALOG)
    repo.write(files["good"], execution_yaml("good-one"))
    repo.write(files["bad"], execution_yaml("bad-one", target=q))
    repo.write(files["nameless"], execution_yaml(q, target="x/Deployment/nameless"))
    repo.write("status/good-one.yaml", _status("good-one", q, "Failed"))
    repo.write("status/orphan-one.yaml", _status("orphan-one", q, "Running"))  # recorded, no longer declared
    repo.commit(f"declare {payload}")
    listed = raw_git(repo, "ls-files", "-z").split("\0")
    assert set(files.values()) <= set(listed), "Git must hold the hostile file names as they are"
    subject = raw_git(repo, "log", "-1", "--format=%s").rstrip("\n")
    return Hostile(payload, repo, root / "cache", files["good"], files["bad"], files["nameless"], subject)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as s:
        yield s


def invoke(args: list[str]) -> tuple[int, str, str]:
    # color=True: click must not strip ANSI sequences on our behalf; what we print is what a TTY gets
    result = CliRunner().invoke(main, args, catch_exceptions=False, color=True)
    return result.exit_code, result.stdout, result.stderr


def assert_inert(text: str, *, annotations: int = 0) -> None:
    """No raw unsafe character; no line a runner takes as a command but the tool's annotations."""
    raw = sorted({c for c in text if c != "\n" and is_unsafe(c)})
    assert not raw, f"raw control/format characters reached the output: {raw!r}"
    commands = [line for line in text.split("\n") if COMMAND_LINE.match(line)]
    assert all(ANNOTATION.fullmatch(line) for line in commands), commands
    assert len(commands) == annotations, commands


def source(h: Hostile, *extra: str) -> list[str]:
    return [*extra, "--repo", str(h.repo.path), "--cache-dir", str(h.cache)]


@dataclass(frozen=True)
class Case:
    args: Callable[[Hostile, str], list[str]]     # (hostile repo, kubeconfig) → argv
    code: int
    shows: Callable[[Hostile], list[tuple[str, str]]]  # [(stream, escaped text it must show)]


CASES: dict[str, Case] = {
    "validate": Case(lambda h, _: ["validate", str(h.repo.path)], 1,
                     lambda h: [("out", clean(h.bad_file)), ("out", clean(h.nameless_file))]),
    "plan": Case(lambda h, _: source(h, "plan"), 1,
                 lambda h: [("out", clean(h.bad_file)), ("out", clean(PurePosixPath(h.nameless_file).name))]),
    "status": Case(lambda h, _: source(h, "status"), 0,
                   lambda h: [("out", h.shown)]),  # the orphan's recorded target
    "status-wide": Case(lambda h, _: source(h, "status", "-o", "wide"), 0,
                        lambda h: [("out", h.shown)]),
    "get": Case(lambda h, _: source(h, "get", "good-one"), 0,
                lambda h: [("out", f"File:         {clean(h.good_file)}\n"),
                           ("out", f"Message:      {h.shown}\n"),
                           ("out", f"  reason: {h.shown}\n"),
                           ("out", f"Declared in:  {h.repo.git('rev-parse', 'HEAD')[:12]} {clean(h.subject)} ("),
                           ("out", f" {clean(h.subject)}\n")]),  # the status commit, last line
    "get-orphan": Case(lambda h, _: source(h, "get", "orphan-one"), 0,
                       lambda h: [("out", f"Target:       {h.shown}\n"), ("out", f"Phase:        Running ({h.shown})\n")]),
    "get-unknown-name": Case(lambda h, _: source(h, "get", h.payload), 2,
                             lambda h: [("err", "error: no execution named ")]),
    "get-invalid": Case(lambda h, _: source(h, "get", "bad-one"), 0,
                        lambda h: [("out", f"File:         {clean(h.bad_file)}\n")]),
    "wait-ended": Case(lambda h, _: source(h, "wait", "good-one", "--timeout", "1s", "--interval", "1s"), 1,
                       lambda h: [("err", f"good-one: ended Failed ({h.shown}): {h.shown}\n")]),
    "wait-reached": Case(lambda h, _: source(h, "wait", "orphan-one", "--for", "phase=Running", "--timeout", "5s"), 0,
                         lambda h: [("out", f"orphan-one: Running ({h.shown})\n")]),
    # the name (here, from the command line) is not declared: an error at once (issue 12), and the
    # name it repeats is inert too
    "wait-name-at-line-start": Case(lambda h, _: source(h, "wait", h.payload, "--for", "phase=Pending",
                                                        "--timeout", "5s"), 2,
                                    lambda h: [("err", "error: no execution named ")]),
    "render-invalid": Case(lambda h, _: source(h, "render", "bad-one"), 1,
                           lambda h: [("err", clean(h.bad_file))]),
    "render-unknown": Case(lambda h, _: source(h, "render", h.payload), 2,
                           lambda h: [("err", "error: no execution named ")]),
    # exit 1: the hostile repository holds an invalid file (sync --dry-run says so, issue 12)
    "sync-dry-run": Case(lambda h, kc: source(h, "sync", "--once", "--dry-run", "--kubeconfig", kc), 1,
                         lambda h: [("out", "bad-one "), ("err", f"file={clean(h.bad_file)} ")]),
    "diff": Case(lambda h, kc: source(h, "diff", "--kubeconfig", kc), 0,
                 lambda h: [("out", "in sync"), ("err", f"file={clean(h.bad_file)} ")]),
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_text_command_output_is_inert(hostile: Hostile, command: str, server: FakeKubeServer,
                                      tmp_path: Path) -> None:
    case = CASES[command]
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kc"))
    code, out, err = invoke(case.args(hostile, kubeconfig))
    assert code == case.code, (out, err)
    assert_inert(out)
    assert_inert(err)
    for stream, text in case.shows(hostile):
        assert text in (out if stream == "out" else err), (stream, text, out, err)


def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    """Bytes 0xff 0x9b (an 8-bit CSI) in a file name arrive as lone surrogates: shown, not fatal."""
    repo = WorkRepo(tmp_path / "repo")
    repo.write("workflows/w.yaml", CATALOG)
    (repo.path / "executions").mkdir()
    Path(os.fsdecode(os.fsencode(repo.path / "executions") + b"/bad\xff\x9b[2J.yaml")).write_text(
        execution_yaml("bad-one", target="zz"))
    repo.commit("declare")
    shown = "executions/bad\\udcff\\udc9b[2J.yaml"
    common = ["--repo", str(repo.path), "--cache-dir", str(tmp_path / "c")]
    for args, code in ((["validate", str(repo.path)], 1), (["plan", *common], 1), (["get", "bad-one", *common], 0),
                       (["plan", "-o", "markdown", *common], 1), (["render", "bad-one", *common], 1)):
        status, out, err = invoke(args)
        assert status == code, (args, out, err)
        assert_inert(out)
        assert_inert(err)
        assert shown in out + err, (args, out, err)


def test_rich_markup_is_printed_as_written(tmp_path: Path) -> None:
    """Nothing goes through rich: markup in a value is neither interpreted nor dropped."""
    repo = WorkRepo(tmp_path / "repo")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG,
                              "status/orphan-one.yaml": _status("orphan-one", '"[bold red]rich markup[/]"', "Failed")})
    code, out, _ = invoke(["get", "orphan-one", "--repo", str(repo.path), "--cache-dir", str(tmp_path / "c")])
    assert code == 0 and "\x1b" not in out
    assert "Message:      [bold red]rich markup[/]\n" in out


def test_github_annotations_are_the_only_commands(hostile: Hostile) -> None:
    _, listing, _ = invoke(["validate", "-o", "json", str(hostile.repo.path)])
    problems = json.loads(listing)["problems"]
    code, out, err = invoke(["validate", "-o", "github", str(hostile.repo.path)])
    assert code == 1 and problems
    assert_inert(out, annotations=len(problems))
    assert_inert(err)
    lines = out.splitlines()
    for problem, line in zip(problems, lines, strict=True):
        assert line.startswith(f"::error file={gh_property(problem['file'])},line={problem['line']},")
        assert line.endswith(f"::{gh_data(problem['path'] + ': ' + problem['message'])}")


def test_markdown_plan_keeps_seven_cells_per_row_and_no_html(hostile: Hostile) -> None:
    code, out, _ = invoke(source(hostile, "plan", "-o", "markdown"))
    assert code == 1
    assert_inert(out)
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3  # header, delimiter; good-one, bad-one, the nameless file
    assert {len(gfm_cells(line)) for line in table} == {7}
    rows = table_rows(out)
    assert len(rows) == len(table) - 1 and {len(r) for r in rows} == {7}
    tokens = MD.parse(out)
    html = [t.content.strip() for t in tokens if t.type == "html_block"]
    assert html == ["<details><summary>Validation problems</summary>", "</details>"]
    children = [c for t in tokens if t.type == "inline" for c in t.children or []]
    assert not [c for c in children if c.type == "html_inline"]
    codes = [c.content for c in children if c.type == "code_inline"]
    assert any(c.startswith(clean(hostile.bad_file) + ":") for c in codes), codes
    assert clean(PurePosixPath(hostile.nameless_file).name) in [
        c.replace("\\\\", "\\") for c in codes]  # the table cell (see md_code on backslashes before |)


def test_json_log_lines_round_trip_the_hostile_file_name(hostile: Hostile, server: FakeKubeServer,
                                                         tmp_path: Path) -> None:
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kc"))
    code, _, err = invoke(["--log-format", "json", *source(hostile, "sync", "--once", "--dry-run",
                                                            "--kubeconfig", kubeconfig)])
    assert code == 1  # the hostile repository holds an invalid file
    assert_inert(err)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert hostile.bad_file in [r.get("file") for r in records]


# -- log formatters -----------------------------------------------------------------------------------

def _record(payload: str) -> logging.LogRecord:
    record = logging.LogRecord("reconciler.cycle", logging.WARNING, __file__, 1, "invalid %s", (payload,), None)
    record.file = payload
    record.execution = payload
    return record


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_text_log_line_is_one_inert_line(name: str) -> None:
    payload = PAYLOADS[name]
    line = TextFormatter().format(_record(payload))
    assert_inert(line)
    assert "\n" not in line
    assert line == f"warning reconciler.cycle: invalid {clean(payload)} file={clean(payload)} execution={clean(payload)}"


def test_text_log_line_never_starts_a_command() -> None:
    record = logging.LogRecord("", logging.INFO, __file__, 1, "x", (), None)
    record.levelname = "::error::pwned"  # the one part not normally user text, still guarded
    assert TextFormatter().format(record).startswith("\\x3a:error::pwned")


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_json_log_line_is_inert_and_decodes_to_the_original(name: str) -> None:
    payload = PAYLOADS[name]
    line = JsonFormatter().format(_record(payload))
    assert_inert(line)
    data = json.loads(line)
    assert (data["msg"], data["file"], data["execution"]) == (f"invalid {payload}", payload, payload)

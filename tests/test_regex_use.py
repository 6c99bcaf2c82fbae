"""No validation pattern in the package may be used without whole-value, ASCII semantics.

``PATTERN.match(value)`` with a pattern ending in ``$`` accepts ``value + "\\n"`` (``$`` also
matches before a final newline), and ``\\d`` accepts Arabic-Indic and fullwidth digits: a
``targetResource: |`` block scalar passed every check and made a *second* lock key for one
Deployment.  This test reads the package's source (``ast``, no import side effects) and
fails on any regex use that could repeat that:

* ``re.match``/``re.search`` and ``<pattern>.match``/``.search`` calls: validation uses
  ``fullmatch``; a genuine search must be allow-listed below with the reason;
* a ``$`` anchor in a pattern (use ``fullmatch``, or ``\\Z`` in a search);
* ``\\d \\w \\s \\b`` (and their negations) or case-insensitive matching without ``re.ASCII``;
* a ``re.compile`` of something that is not a literal (it cannot be checked).

The allow-list names each permitted use by file and by what it is, so a new use of a
listed pattern in another file, or a new pattern in a listed file, still fails.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"
RE_FUNCS = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"}
FLAGS_POSITION = {"compile": 1, "match": 2, "search": 2, "fullmatch": 2, "findall": 2, "finditer": 2,
                  "split": 3, "sub": 4, "subn": 4}
_UNICODE_CLASS = re.compile(r"(?<!\\)(?:\\\\)*\\[dDwWsSbB]", re.ASCII)
_DOLLAR = re.compile(r"(?<!\\)(?:\\\\)*\$", re.ASCII)
_INLINE_IGNORECASE = re.compile(r"\(\?[a-zA-Z]*i[a-zA-Z]*\)", re.ASCII)

# (file relative to reconciler/, what) → why it is not a whole-value validation.
# "*" allows every use in a file that only ever *searches free text*.
ALLOWED: dict[tuple[str, str], str] = {
    ("observe/failures.py", "*"): "classifies free-text Tekton/Kubernetes messages (word-boundary searches, "
                          "IGNORECASE on English words); never validates declared input",
    ("observe/failures_summary.py", "*"): "picks names out of free-text failure messages (RBAC verb/resource, "
                                  "quota, image, parameters) for the recommendation; never validates input",
    ("observe/runstatus.py", "*"): "reads counts out of Tekton's free-text condition messages",
    ("observe/logevidence.py", "*"): "redaction of log text: Unicode \\s/\\S widen what is redacted, never narrow it",
    ("render/renderer.py", "call:_NEEDS_ESCAPE.search"): "finds any character that needs escaping: a search by design",
    ("gate/policy.py", "call:DIGEST.search"): "looks for a digest suffix, anchored with \\Z, on an image the "
                                         "schema already validated with IMAGE_REFERENCE.fullmatch",
    # The simulated API server (tests and `reconciler testdrive`), not the reconciler's validation:
    ("simulator/faults.py", "call:re.search"): "a test's fault rule matches request paths by a regex the "
                                               "test wrote (inject(path_regex=...)): a search by design",
    ("simulator/server.py", "call:re.search"): "a test's warning rule matches request paths by its own regex",
    ("simulator/selectors.py", "pattern:_TOKEN"): "the selector tokenizer: skips leading whitespace as "
                                                  "kube-apiserver's lexer does; tokens are checked afterwards",
    ("simulator/selectors.py", "call:_TOKEN.match"): "the tokenizer matches one token at a position (match(text, pos))",
    # Files of other owners that only search free text (reported to them for review):
    ("source/gitwords.py", "*"): "searches Git's stderr (damage detection, object ids), redacts credentials in "
                          "URLs and output, splits revisions; commit ids are checked with fullmatch",
    ("service/app.py", "*"): "normalises a repository URL for display (scheme, user, port, .git stripped)",
    ("safetext.py", "*"): "finds workflow-command prefixes (::, ##[) at the start of output lines to "
                          "escape them; Unicode \\s is wider than what the runner trims, so safer",
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str  # "call:<callee>" or "pattern:<name>"
    why: str

    def __str__(self) -> str:
        return f"reconciler/{self.file}:{self.line}: {self.what}: {self.why}"


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "<expr>"


def _has_ascii_flag(node: ast.expr | None) -> bool:
    if node is None:
        return False
    return any(isinstance(n, ast.Attribute) and n.attr in ("ASCII", "A") for n in ast.walk(node)) or any(
        isinstance(n, ast.Name) and n.id in ("ASCII", "A") for n in ast.walk(node))


def _has_ignorecase_flag(node: ast.expr | None) -> bool:
    if node is None:
        return False
    return any(isinstance(n, ast.Attribute | ast.Name) and _dotted(n).rsplit(".", 1)[-1] in ("IGNORECASE", "I")
               for n in ast.walk(node))


def _pattern_findings(pattern: str, flags: ast.expr | None) -> list[str]:
    out = []
    if _DOLLAR.search(pattern):
        out.append("'$' also matches before a final newline: use fullmatch (or \\Z in a search)")
    unicode_sensitive = _UNICODE_CLASS.search(pattern) or _INLINE_IGNORECASE.search(pattern) \
        or _has_ignorecase_flag(flags)
    if unicode_sensitive and not _has_ascii_flag(flags):
        out.append("\\d/\\w/\\s/\\b or IGNORECASE match non-ASCII characters: add re.ASCII or use [0-9]")
    return out


def scan_source(source: str, file: str) -> list[Finding]:
    """Every regex use in ``source`` that lacks whole-value ASCII semantics."""
    tree = ast.parse(source)
    names: dict[int, str] = {}  # id(compile call) → the name it is assigned to
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(node.value, ast.Call) and isinstance(target, ast.Name):
                names[id(node.value)] = target.id
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        callee = _dotted(node.func)
        attr = node.func.attr
        is_re = isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and attr in RE_FUNCS
        if attr in ("match", "search"):
            findings.append(Finding(file, node.lineno, f"call:{callee}",
                                    f".{attr}() does not require the whole value to match: use fullmatch"))
        if not is_re:
            continue
        flags: ast.expr | None = next((k.value for k in node.keywords if k.arg == "flags"), None)
        position = FLAGS_POSITION[attr]
        if flags is None and len(node.args) > position:
            flags = node.args[position]
        label = f"pattern:{names.get(id(node), 're.' + attr) if attr == 'compile' else 're.' + attr}"
        first = node.args[0] if node.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            if attr == "compile":
                findings.append(Finding(file, node.lineno, label, "the pattern is not a literal, so it "
                                                                   "cannot be checked"))
            continue
        findings.extend(Finding(file, node.lineno, label, why) for why in _pattern_findings(first.value, flags))
    return findings


def allowed(finding: Finding) -> bool:
    return (finding.file, "*") in ALLOWED or (finding.file, finding.what) in ALLOWED


def test_every_pattern_in_the_package_matches_whole_ascii_values() -> None:
    findings: list[Finding] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        findings.extend(f for f in scan_source(path.read_text(encoding="utf-8"), rel) if not allowed(f))
    assert not findings, "regex uses without whole-value ASCII semantics:\n" + "\n".join(map(str, findings))


def test_the_allow_list_gives_a_reason_for_every_entry() -> None:
    assert all(len(reason) > 20 for reason in ALLOWED.values())
    assert all((PACKAGE / file).is_file() for file, _ in ALLOWED)


# (source, expected findings as "what" strings) — the scanner itself must catch each hazard
SCANNER_CASES = [
    ('X = re.compile(r"^[a-z]+$")\nX.match(v)\n', ["call:X.match", "pattern:X"]),
    ('X = re.compile(r"[a-z]+")\nX.search(v)\n', ["call:X.search"]),
    ('X = re.compile(r"[a-z]+")\nok = X.fullmatch(v)\n', []),
    ('X = re.compile(r"[0-9]+h")\n', []),
    ('X = re.compile(r"\\d+h")\n', ["pattern:X"]),
    ('X = re.compile(r"\\d+h", re.ASCII)\n', []),
    ('X = re.compile(r"\\d+h", flags=re.A)\n', []),
    ('X = re.compile(r"[a-k]+", re.IGNORECASE)\n', ["pattern:X"]),
    ('X = re.compile(r"(?i)[a-k]+")\n', ["pattern:X"]),
    ('X = re.compile(r"[a-k]+", re.IGNORECASE | re.ASCII)\n', []),
    ('X = re.compile(r"a\\$")\n', []),  # an escaped dollar is a literal character
    ('X = re.compile(r"a\\\\$")\n', ["pattern:X"]),  # an escaped backslash, then the anchor
    ('ok = re.match(r"[a-z]+", v)\n', ["call:re.match"]),
    ('ok = re.search(r"[a-z]+\\Z", v)\n', ["call:re.search"]),
    ('ok = re.fullmatch(r"\\w+", v)\n', ["pattern:re.fullmatch"]),
    ('v = re.sub(r"\\s+$", "", v)\n', ["pattern:re.sub"]),
    ('v = re.sub(r"\\s+", "", v, 0, re.ASCII)\n', []),
    ('X = re.compile(pattern)\n', ["pattern:X"]),
    ('names.PARAMETER_NAME.match(key)\n', ["call:names.PARAMETER_NAME.match"]),
]


@pytest.mark.parametrize(("source", "expected"), SCANNER_CASES, ids=[c[0].split("\n")[0] for c in SCANNER_CASES])
def test_the_scanner_catches_each_hazard(source: str, expected: list[str]) -> None:
    assert sorted({f.what for f in scan_source(source, "x.py")}) == sorted(expected)

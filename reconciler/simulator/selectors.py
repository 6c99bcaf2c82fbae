"""Label and field selectors with the API server's grammar.

`labelSelector` supports equality (`=`, `==`, `!=`), set-based (`in`, `notin`), existence
(`key`, `!key`) and the numeric `>`/`<`; a comma is AND. `fieldSelector` supports `=`, `==`
and `!=` on the fields a resource declares selectable, like the real server (anything else
is a 400 `field label not supported`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")  # fullmatch: whole key
_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")  # fullmatch: whole value
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s,()=!<>]+)")


class SelectorError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise SelectorError(f"unable to parse requirement: unexpected character at {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or len(key.rpartition("/")[2]) > 63:
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": name part must '
                            "consist of alphanumeric characters, '-', '_' or '.', and must start and "
                            "end with an alphanumeric character")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.fullmatch(value):
        raise SelectorError(f'unable to parse requirement: values[0][value]: Invalid value: "{value}": '
                            "a valid label must be an empty string or consist of alphanumeric "
                            "characters, '-', '_' or '.', and must start and end with an "
                            "alphanumeric character")
    return value


def parse_label_selector(text: str | None) -> Predicate:
    """Parse a label selector into a predicate over an object's labels."""
    if not text or not text.strip():
        return lambda labels: True
    toks = _tokens(text)
    reqs: list[Predicate] = []
    i = 0

    def peek(offset: int = 0) -> str | None:
        return toks[i + offset] if i + offset < len(toks) else None

    while i < len(toks):
        if peek() == "!":
            key = _check_key(toks[i + 1]) if i + 1 < len(toks) else ""
            if not key:
                raise SelectorError("unable to parse requirement: missing key after '!'")
            reqs.append(_absent(key))
            i += 2
        else:
            key = _check_key(toks[i])
            op = peek(1)
            if op in (None, ","):
                reqs.append(_present(key))
                i += 1
            elif op in ("=", "==", "!="):
                value = peek(2)
                if value in (None, ","):
                    value, i = "", i + 2
                else:
                    i += 3
                _check_value(value or "")
                reqs.append(_equals(key, value or "", negate=op == "!="))
            elif op in ("in", "notin"):
                if peek(2) != "(":
                    raise SelectorError(f"unable to parse requirement: found '{peek(2)}', expected: '('")
                j = i + 3
                values: set[str] = set()
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        values.add(_check_value(toks[j]))
                    j += 1
                if j >= len(toks):
                    raise SelectorError("unable to parse requirement: found '', expected: ')'")
                if not values:
                    raise SelectorError("unable to parse requirement: for 'in', 'notin' operators, "
                                        "values set can't be empty")
                reqs.append(_member(key, frozenset(values), negate=op == "notin"))
                i = j + 1
            elif op in (">", "<"):
                raw = peek(2) or ""
                try:
                    bound = int(raw)
                except ValueError as exc:
                    raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the "
                                        f"value must be an integer: {raw}") from exc
                reqs.append(_numeric(key, op, bound))
                i += 3
            else:
                raise SelectorError(f"unable to parse requirement: found '{op}', expected: "
                                    "in, notin, =, ==, !=, gt, lt")
        if i < len(toks):
            if toks[i] != ",":
                raise SelectorError(f"found '{toks[i]}', expected: ',' or 'end of string'")
            i += 1
            if i >= len(toks):
                raise SelectorError("found '', expected: identifier after ','")
    return lambda labels: all(req(labels) for req in reqs)


def _absent(key: str) -> Predicate:
    return lambda labels: key not in labels


def _present(key: str) -> Predicate:
    return lambda labels: key in labels


def _equals(key: str, value: str, negate: bool) -> Predicate:
    return lambda labels: (labels.get(key) == value) != negate


def _member(key: str, values: frozenset[str], negate: bool) -> Predicate:
    return lambda labels: (labels.get(key) in values) != negate


def _field_equals(path: str, value: str, negate: bool) -> Predicate:
    return lambda obj: (field_value(obj, path) == value) != negate


def _numeric(key: str, op: str, bound: int) -> Predicate:
    def check(labels: dict[str, Any]) -> bool:
        try:
            value = int(labels[key])
        except (KeyError, ValueError):
            return False
        return value > bound if op == ">" else value < bound
    return check


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, buf, escaped = [], "", False
    for ch in text:
        if escaped:
            buf += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    return parts


def field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):  # e.g. Event.source: component
        return str(cur.get("component", ""))
    return str(cur)


def parse_field_selector(text: str | None, allowed: Iterable[str]) -> Predicate:
    """Parse a field selector into a predicate over a whole object."""
    if not text or not text.strip():
        return lambda obj: True
    allowed_set = set(allowed)
    reqs: list[Predicate] = []
    for term in _split_unescaped(text, ","):
        term = term.strip()
        m = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", term, re.ASCII | re.DOTALL)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = m.group(1).strip(), m.group(2), m.group(3)
        if path not in allowed_set:
            raise SelectorError(f'field label not supported: {path}')
        reqs.append(_field_equals(path, value, negate=op == "!="))
    return lambda obj: all(req(obj) for req in reqs)

"""Load declared YAML documents safely, remembering where every field came from.

PyYAML's ``safe_load`` is not enough for a review-gated input format:

* it follows YAML 1.1, so ``yes``/``no``/``on`` become booleans and ``1.10`` becomes the
  float ``1.1`` — a parameter value would silently change between review and execution;
* it keeps the last of two duplicate keys without a word;
* it forgets line numbers, so errors cannot point at the offending line;
* anchors and aliases can expand a small file into a huge structure.

This module composes the node graph with libyaml (fast, C) and builds plain Python data
from it itself: YAML 1.2 core-schema scalars, duplicate keys and aliases rejected, a size
limit, and a map from each field path to its line/column.  Plain (unquoted) scalars also
keep their source text so parameter values can be passed on exactly as written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import yaml

from reconciler.errors import Problem

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000

PathKey = tuple[str | int, ...]

_log = logging.getLogger("reconciler.yaml")

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """libyaml parser with no implicit (YAML 1.1) resolution: every plain scalar arrives
    tagged ``str`` and :func:`_resolve_plain` applies the YAML 1.2 core schema instead."""

    yaml_implicit_resolvers: dict[str, Any] = {}  # noqa: RUF012

    # libyaml calls these for every node; path resolvers are not used here
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # called by libyaml for every untagged node; no path or implicit resolvers here
        if kind is yaml.ScalarNode:
            return "tag:yaml.org,2002:str"
        if kind is yaml.SequenceNode:
            return "tag:yaml.org,2002:seq"
        return "tag:yaml.org,2002:map"

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution); whole values
# (fullmatch), ASCII digits only
_NULL = re.compile(r"~|null|Null|NULL|", re.ASCII)
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE", re.ASCII)
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", re.ASCII)
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
    re.ASCII,
)
# No declared or status field needs a longer integer; int() of a few thousand digits raises
# (sys.int_max_str_digits) and so does printing one, so longer ones are the file's error.
MAX_INT_DIGITS = 100
# Executions are four levels deep, status files six; the limit keeps the builder (and
# everything that walks the data after it) far from the interpreter's recursion limit.
MAX_DEPTH = 64
# Bound the size of one report: a 1 MB key must not become a 1 MB message, 100 times.
MAX_MESSAGE = 1000
MAX_PATH = 300
_STD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class _TooLarge(ValueError):
    """A scalar the core schema would resolve to a number too large to handle."""


class _DocumentError(Exception):
    def __init__(self, rule: str, message: str, mark: Any | None, path: PathKey = ()):
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.mark = mark
        self.path = path


class YamlDocument:
    """One YAML document as plain data, plus its node tree for locating fields.

    Positions and the source text of plain scalars are looked up in the node tree only
    when asked (when a problem is reported, or a parameter is a number), so a valid file
    costs nothing extra.  Each mapping is indexed by key the first time a lookup passes
    through it, so reporting *n* problems in one mapping costs O(n), not O(n²) — a file of
    90 000 unknown keys is reported as fast as it is parsed.  ``steps`` counts the node
    visits that lookups made (the work, measured without a clock).
    """

    __slots__ = ("_index", "data", "file", "root", "steps")

    def __init__(self, data: Any, file: str, root: yaml.Node | None = None):
        self.data = data
        self.file = file
        self.root = root
        self.steps = 0
        self._index: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    def _entries(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        index = self._index.get(id(node))
        if index is None:
            index = {}
            for key_node, value_node in node.value:
                self.steps += 1
                if isinstance(key_node, yaml.ScalarNode):
                    index.setdefault(str(key_node.value), (key_node, value_node))
            self._index[id(node)] = index
        return index

    def _walk(self, path: PathKey) -> tuple[yaml.Node | None, yaml.Node | None]:
        """(deepest node found along ``path``, the key node of the last mapping step)."""
        node = self.root
        key_node: yaml.Node | None = None
        for part in path:
            self.steps += 1
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = self._entries(node).get(part)
                if match is None:
                    return node, key_node
                key_node, node = match
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                key_node, node = None, node.value[part]
            else:
                return node, key_node
        return node, key_node

    def position(self, path: PathKey) -> tuple[int | None, int | None]:
        """Line/column (1-based) of ``path`` — of its key where it has one — or of the
        nearest ancestor the file contains."""
        node, key_node = self._walk(path)
        mark_node = key_node if key_node is not None else node
        if mark_node is None:
            return (None, None)
        return (mark_node.start_mark.line + 1, mark_node.start_mark.column + 1)

    def _has(self, path: PathKey) -> bool:
        probe: Any = self.data
        for part in path:
            in_dict = isinstance(probe, dict) and part in probe
            in_list = isinstance(probe, list) and isinstance(part, int) and part < len(probe)
            if in_dict or in_list:
                probe = probe[part]
            else:
                return False
        return True

    def plain_text(self, path: PathKey) -> str | None:
        """The source text of a plain (unquoted) scalar at ``path``: ``1.10`` stays 1.10."""
        if not self._has(path):
            return None
        node, _ = self._walk(path)
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        return None

    def problem(self, path: PathKey, rule: str, message: str) -> Problem:
        line, col = self.position(path)
        return Problem(self.file, line, col, format_path(path), rule, clip(message, MAX_MESSAGE))


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return clip(out, MAX_PATH)


def _resolve_plain(value: str) -> tuple[str, Any]:
    if _NULL.fullmatch(value):
        return "null", None
    if _BOOL.fullmatch(value):
        return "bool", value.lower() == "true"
    if _INT.fullmatch(value):
        digits = value.lstrip("+-")
        digits = (digits[2:] if digits[:2] in ("0o", "0x") else digits).lstrip("0")
        if len(digits) > MAX_INT_DIGITS:
            raise _TooLarge(f"integer of {len(digits)} digits is too large (at most "
                            f"{MAX_INT_DIGITS}); quote it if it is text")
        if value.startswith("0o"):
            return "int", int(value[2:], 8)
        if value.startswith("0x"):
            return "int", int(value[2:], 16)
        return "int", int(value)
    if _FLOAT.fullmatch(value):
        lowered = value.lower()
        if lowered.endswith("inf"):
            return "float", float("-inf") if value.startswith("-") else float("inf")
        if lowered.endswith("nan"):
            return "float", float("nan")
        return "float", float(value)
    return "str", value


_STR = "tag:yaml.org,2002:str"


class _Builder:
    """Plain data from a node tree, YAML 1.2 core scalars, with a node budget."""

    def __init__(self) -> None:
        self.budget = MAX_NODES

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _DocumentError("too-complex", f"document has more than {MAX_NODES} nodes",
                                 node.start_mark, path)
        if len(path) > MAX_DEPTH:
            raise _DocumentError("too-complex", f"document is nested more than {MAX_DEPTH} levels deep",
                                 node.start_mark, path[:MAX_DEPTH])
        tag = node.tag
        if tag != _STR and tag not in _STD_TAGS and tag != "!":
            raise _DocumentError("unsupported-tag", f"YAML tag {clip(tag, 60)!r} is not allowed",
                                 node.start_mark, path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]

    @staticmethod
    def _scalar(node: yaml.ScalarNode, path: PathKey) -> Any:
        try:
            return _Builder._resolve_scalar(node, path)
        except _TooLarge as e:
            raise _DocumentError("number-too-large", str(e), node.start_mark, path) from None

    @staticmethod
    def _resolve_scalar(node: yaml.ScalarNode, path: PathKey) -> Any:
        value: str = node.value
        tag = node.tag
        if tag == _STR or tag == "!":
            if not node.style:
                # plain scalar: YAML 1.2 core schema; most values are plain words
                first = value[:1]
                if first and (first.isalpha() and value not in _WORDS):
                    return value
                return _resolve_plain(value)[1]
            return value
        # an explicit standard tag such as !!int "3"
        kind, parsed = _resolve_plain(value)
        if tag != f"tag:yaml.org,2002:{kind}":
            raise _DocumentError("wrong-type", f"{clip(value, 60)!r} is not a valid {tag.rsplit(':', 1)[-1]}",
                                 node.start_mark, path)
        return parsed

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_STR, "!"):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _DocumentError("unsupported-tag", "merge keys (<<) are not allowed",
                                         key_node.start_mark, path)
                raise _DocumentError("wrong-type", "mapping keys must be strings",
                                     key_node.start_mark, path)
            key = key_node.value  # keys stay text (`on:` is "on"); the schema judges them
            if key in result:
                raise _DocumentError("duplicate-key", f"key {clip(key, 60)!r} appears twice in the same mapping",
                                     key_node.start_mark, (*path, key))
            result[key] = self.build(value_node, (*path, key))
        return result


# plain words that YAML 1.2 resolves to something other than a string
_WORDS = frozenset({"null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE"})


def _reject_aliases(text: str, file: str) -> None:
    """Aliases are the vector for 'billion laughs' expansion; executions never need them."""
    loader = _Loader(text)
    try:
        while True:
            event = loader.get_event()
            if event is None:
                return
            if isinstance(event, yaml.AliasEvent):
                raise _DocumentError(
                    "alias", "YAML aliases (*ref) are not allowed", event.start_mark
                )
            if isinstance(event, yaml.StreamEndEvent):
                return
    finally:
        loader.dispose()


def load_documents(
    raw: bytes | int, file: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[YamlDocument], list[Problem]]:
    """Parse every document of one YAML stream. Returns (documents, problems).

    ``raw`` may be an int: the size of a file the caller did not read because it is too
    large.  Never raises for bad input: every failure becomes a Problem naming the file.
    """
    size = raw if isinstance(raw, int) else len(raw)
    if size > max_bytes or isinstance(raw, int):
        return [], [
            Problem(file, None, None, "", "file-too-large",
                    f"file is {size} bytes; the limit is {max_bytes} bytes")
        ]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], [Problem(file, None, None, "", "encoding", f"file is not valid UTF-8: {e}")]
    if text.startswith("\ufeff"):
        text = text[1:]
    docs: list[YamlDocument] = []
    try:
        if "*" in text:
            _reject_aliases(text, file)
        for node in _compose_all(text):
            data = _Builder().build(node, ()) if node is not None else None
            docs.append(YamlDocument(data, file, node))
    except _DocumentError as e:
        line, col = (e.mark.line + 1, e.mark.column + 1) if e.mark is not None else (None, None)
        return [], [Problem(file, line, col, format_path(e.path), e.rule, clip(e.message, MAX_MESSAGE))]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        detail = " ".join(x for x in (e.context, e.problem) if x)
        return [], [Problem(file, line, col, "", "yaml-syntax", clip(f"invalid YAML: {detail}", MAX_MESSAGE))]
    except yaml.YAMLError as e:
        return [], [Problem(file, None, None, "", "yaml-syntax", clip(f"invalid YAML: {e}", MAX_MESSAGE))]
    except RecursionError:
        return [], [Problem(file, None, None, "", "too-complex", "document is nested too deeply")]
    except MemoryError:
        return [], [Problem(file, None, None, "", "too-complex", "document is too large to load")]
    except Exception as e:  # defence in depth: one file's failure is that file's problem
        _log.warning("unexpected error loading %s", file, exc_info=True)
        return [], [Problem(file, None, None, "", "unreadable",
                            f"file could not be loaded ({type(e).__name__}); please report this")]
    return docs, []


def _compose_all(text: str) -> Iterator[yaml.Node | None]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()

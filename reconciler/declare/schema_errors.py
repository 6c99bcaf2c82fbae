"""Turn pydantic's validation errors into Problems a reviewer can act on.

pydantic reports ``extra_forbidden`` at ``('spec', 'parametrs')``; a reviewer needs
"executions/x.yaml:9:3: spec.parametrs: unknown field 'parametrs' (did you mean
'parameters'?)".  This module owns that translation: rule ids, wording, "did you mean"
suggestions from the model's own field names, and line numbers from the YAML document.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.declare.yamldoc import PathKey, YamlDocument, clip
from reconciler.errors import Problem

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_from_float": "an integer",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return f"the string {text[:60]}{'…' if len(text) > 60 else ''}"


def model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for n, f in current.model_fields.items() if (f.alias or n) == part or n == part), None
        )
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap(arg)
    if origin in (list, tuple):
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


# "did you mean" costs a fuzzy comparison per unknown field: only the first ones of a file
# get it (a file of 90 000 unknown fields reports 100 of them anyway, see declared.capped)
_HINTED_PER_FILE = 1000


def translate(
    error: ValidationError, doc: YamlDocument, model: type[BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    hints_left = _HINTED_PER_FILE
    for item in error.errors(include_url=False):
        loc: PathKey = tuple(item["loc"])
        kind = item["type"]
        value = item.get("input")
        field = str(loc[-1]) if loc else ""
        if kind == "extra_forbidden":
            parent = model_at(model, loc[:-1])
            allowed = field_names(parent) if parent else []
            hint = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6) if hints_left > 0 else []
            hints_left -= 1
            msg = f"unknown field {clip(field, 100)!r}"
            if hint:
                msg += f" (did you mean {hint[0]!r}?)"
            elif allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
            problems.append(doc.problem(loc, "unknown-field", msg))
        elif kind == "missing":
            problems.append(doc.problem(loc, "missing-field", f"required field {field!r} is missing"))
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            problems.append(
                doc.problem(loc, "wrong-value", f"must be {expected}, got {_describe(value)}")
            )
        elif kind in _TYPE_WORDS:
            quote_hint = ""
            if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
                quote_hint = f'; quote it: "{doc.plain_text(loc) or value}"'
            problems.append(
                doc.problem(
                    loc, "wrong-type", f"must be {_TYPE_WORDS[kind]}, got {_describe(value)}{quote_hint}"
                )
            )
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            problems.append(doc.problem(loc, "out-of-range", item["msg"].replace("Input", "value")))
        elif kind in ("string_too_long", "too_long"):
            problems.append(doc.problem(loc, "too-long", item["msg"].replace("Value", "value")))
        elif "-" in kind:  # our own PydanticCustomError rule ids
            problems.append(doc.problem(loc, kind, item["msg"]))
        else:
            problems.append(doc.problem(loc, "invalid", item["msg"]))
    return problems

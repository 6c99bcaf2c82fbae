"""CRD structural schemas as kube-apiserver applies them to what a client sends.

On a real cluster a custom resource is decoded against its CRD's ``openAPIV3Schema``
before anything else sees it:

* **pruning**: a field the schema does not declare (and no ``x-kubernetes-preserve-
  unknown-fields`` keeps) is dropped; the answer still succeeds and carries a
  ``Warning: 299 - "unknown field \\"spec.timeout\\""`` header per dropped field
  (``fieldValidation=Warn``, the server's default); ``Ignore`` drops silently;
  ``Strict`` refuses the whole request with 400 BadRequest,
  ``... strict decoding error: unknown field "spec.timeout"`` (KEP-2885);
* **types**: a value of the wrong type is refused with 422 Invalid,
  ``spec.timeouts.pipeline: Invalid value: "integer": spec.timeouts.pipeline in body
  must be of type string: "integer"``; ``null`` for a non-nullable field is pruned.

The Tekton CRDs (``300-pipelinerun.yaml`` ... from tektoncd/pipeline, Apache-2.0) are the
reference. They are not shipped in the package: :func:`tekton_dir` finds them in
``$RECONCILER_TEKTON_CRDS`` or, in a checkout next to ``shared/``, in ``../shared/tekton``.
Without them the Tekton types have no schema and nothing is pruned: :func:`tekton_schema`
returns None (``reconciler testdrive`` says so in its banner).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.simulator.validation import Cause

TEKTON_CRDS_ENV = "RECONCILER_TEKTON_CRDS"
# A checkout: <root>/main/reconciler/simulator/schema.py with the CRDs in <root>/shared/tekton.
_CHECKOUT_DIR = Path(__file__).resolve().parents[3] / "shared" / "tekton"
_FILES = {"pipelineruns": "300-pipelinerun.yaml", "taskruns": "300-taskrun.yaml",
          "pipelines": "300-pipeline.yaml", "tasks": "300-task.yaml"}
_SKIP = ("apiVersion", "kind", "metadata")  # handled by the server itself, never pruned here


def tekton_dir() -> Path | None:
    """Where the Tekton CRD files are: ``$RECONCILER_TEKTON_CRDS``, else the checkout's, else None."""
    configured = os.environ.get(TEKTON_CRDS_ENV)
    candidate = Path(configured) if configured else _CHECKOUT_DIR
    return candidate if (candidate / _FILES["pipelineruns"]).is_file() else None


@functools.cache
def tekton_schema(plural: str, version: str = "v1") -> dict[str, Any] | None:
    """The ``openAPIV3Schema`` of a Tekton CRD version, or None when the CRDs are absent."""
    directory = tekton_dir()
    if plural not in _FILES or directory is None or not (directory / _FILES[plural]).is_file():
        return None
    path = directory / _FILES[plural]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(path.read_text(), Loader=loader)
    for entry in doc["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    return None


@dataclass
class Decoded:
    """What decoding found: pruned field paths (``spec.timeout``) and type errors."""

    unknown: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [f'unknown field "{path}"' for path in self.unknown]


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    wanted = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if not wanted:
        return True
    got = _type_of(value)
    return got == wanted or (wanted == "number" and got == "integer")


def _walk(value: Any, schema: dict[str, Any], path: str, out: Decoded) -> Any:
    if not _fits(value, schema):
        got = _type_of(value)
        out.causes.append((path, "FieldValueTypeInvalid",
                           f'Invalid value: "{got}": {path} in body must be of type '
                           f'{schema.get("type")}: "{got}"'))
        return value
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields") is True
        result: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
            if sub is not None:
                if item is None and not sub.get("nullable"):
                    continue  # null for a non-nullable field is pruned
                result[key] = _walk(item, sub, where, out)
            elif keep or extra is True:
                result[key] = item
            else:
                out.unknown.append(where)
        for key in schema.get("required") or []:
            if key not in result:
                where = f"{path}.{key}" if path else key
                out.causes.append((where, "FieldValueRequired", "Required value"))
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_walk(item, schema["items"], f"{path}[{i}]", out) for i, item in enumerate(value)]
    return value


def decode(obj: dict[str, Any], schema: dict[str, Any]) -> Decoded:
    """Prune ``obj`` in place against ``schema`` (apiVersion, kind, metadata left alone)."""
    out = Decoded()
    props = schema.get("properties") or {}
    for key in [k for k in obj if k not in _SKIP]:
        if key not in props:
            out.unknown.append(key)
            del obj[key]
        elif obj[key] is None and not props[key].get("nullable"):
            del obj[key]
        else:
            obj[key] = _walk(obj[key], props[key], key, out)
    return out


def strict_message(kind: str, version: str, unknown: list[str]) -> str:
    fields = ", ".join(f'unknown field "{p}"' for p in unknown)
    return f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}'
